"""k8s/: every manifest validates offline against the Kubernetes 1.37 OpenAPI schemas, and the wiring
between them (env names, Secret and ConfigMap references, identities, probes, pinning) is right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from kubernetes_validate.utils import SchemaNotFoundError  # type: ignore[import-untyped]

from tests.conftest import REPO
from tests.settings_env import component_env_names, unknown_names

K8S = REPO / "k8s"
KUBERNETES_VERSION = "1.37.0"
#: Custom resources (no schema offline): the RabbitMQ operator's and Sedna's.
CUSTOM_KINDS = {"RabbitmqCluster", "Dataset", "Model", "FederatedLearningJob"}
#: Created by the RabbitMQ operator for the RabbitmqCluster (or by alternatives/rabbitmq-statefulset.yaml).
OPERATOR_SECRETS = {"mistnet-rabbitmq-default-user": {"username", "password"}}


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCS = _documents()


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == kind}


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload, Sedna's templates included."""
    for path, doc in DOCS:
        if doc["kind"] == "Kustomization":
            continue
        where = f"{path.relative_to(REPO)}:{doc['kind']}/{doc['metadata']['name']}"
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield where, spec["template"]["spec"]
        elif doc["kind"] == "FederatedLearningJob":
            yield f"{where}/aggregationWorker", spec["aggregationWorker"]["template"]["spec"]
            for i, worker in enumerate(spec["trainingWorkers"]):
                yield f"{where}/trainingWorkers[{i}]", worker["template"]["spec"]


def _component(container: dict[str, Any]) -> str | None:
    image = str(container.get("image", ""))
    if "mistnet-edge" in image:
        return "edge"
    if "mistnet-cloud" in image:
        return "provision" if "provision" in (container.get("command") or []) else "cloud"
    return None


def _our_containers() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for where, pod in _pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            component = _component(container)
            if component is not None:
                yield f"{where}/{container['name']}", component, container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


class TestSchemas:
    """Built-in kinds pass kubernetes-validate (strict: unknown fields fail); custom resources parse,
    and Sedna's pod templates validate as Pods."""

    @pytest.mark.parametrize(("path", "doc"), DOCS, ids=[f"{p.name}:{d['kind']}" for p, d in DOCS])
    def test_manifest(self, path: Path, doc: dict[str, Any]) -> None:
        if doc["kind"] == "Kustomization":
            return
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except SchemaNotFoundError:
            assert doc["kind"] in CUSTOM_KINDS, f"{path}: no schema for {doc['kind']}"
            assert doc["metadata"]["name"] and doc["apiVersion"].split("/")[0] in ("rabbitmq.com", "sedna.io")

    def test_sedna_pod_templates(self) -> None:
        templates = [(w, s) for w, s in _pod_specs() if "FederatedLearningJob" in w]
        assert len(templates) == 3
        for _, spec in templates:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": spec}
            kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)

    def test_kustomization(self) -> None:
        kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        listed = set(kustomization["resources"])
        assert all((K8S / name).is_file() for name in listed)
        assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        images = {c["image"].split(":")[0] for _, _, c in _our_containers()}
        assert images <= {i["name"] for i in kustomization["images"]}


class TestEnvNames:
    """Every env name given to a mistnet container is one its settings class reads (case-insensitive)."""

    def test_container_env(self) -> None:
        problems = []
        for where, component, container in _our_containers():
            problems += unknown_names(dict.fromkeys(_env(container), where), component)
        assert problems == []

    def test_configmap_keys(self) -> None:
        data = _named("ConfigMap")["mistnet-job"]["data"]
        known = component_env_names("edge") | component_env_names("cloud")
        assert sorted(k for k in data if k.upper() not in known) == []
        for seed_name in ("cut_layer", "epsilon", "aggregation_algorithm", "batch_size", "learning_rate", "epochs"):
            assert seed_name in data, f"the seed's {seed_name} should be set as the seed spells it"


class TestWiring:
    """References resolve, each edge is pinned and speaks as itself, the cloud keeps its state and is probed."""

    def test_references_resolve(self) -> None:
        secrets = {n: set(d.get("stringData", {})) | set(d.get("data", {})) for n, d in _named("Secret").items()}
        secrets |= OPERATOR_SECRETS
        maps = {n: set(d["data"]) for n, d in _named("ConfigMap").items()}
        for where, _, container in _our_containers():
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, where
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, where
            for env in container.get("env", []):
                for ref, known in (("secretKeyRef", secrets), ("configMapKeyRef", maps)):
                    target = env.get("valueFrom", {}).get(ref)
                    if target:
                        assert target["key"] in known.get(target["name"], set()), f"{where}: {env['name']}"

    def test_s3_secret_in_seed_format(self) -> None:
        secret = _named("Secret")["mistnet-s3"]
        annotations = secret["metadata"]["annotations"]
        assert set(secret["stringData"]) == {"ACCESS_KEY_ID", "SECRET_ACCESS_KEY"}
        assert annotations["s3-usehttps"] in ("0", "1") and "://" not in annotations["s3-endpoint"]
        scheme = "https" if annotations["s3-usehttps"] == "1" else "http"
        assert (
            _named("ConfigMap")["mistnet-job"]["data"]["S3_ENDPOINT_URL"] == f"{scheme}://{annotations['s3-endpoint']}"
        )

    def test_edges_pinned_and_identities(self) -> None:
        amqp = _named("Secret")["mistnet-amqp"]["stringData"]
        passwords = dict(pair.split("=", 1) for pair in amqp["passwords"].split(","))
        expected = set(_named("ConfigMap")["mistnet-job"]["data"]["MISTNET_EDGES"].split(","))
        seen = set()
        for where, component, container in _our_containers():
            env = _env(container)
            if "MISTNET_AMQP_URL" not in env:
                continue
            url = urlsplit(amqp[env["MISTNET_AMQP_URL"]["valueFrom"]["secretKeyRef"]["key"]])
            assert passwords[str(url.username)] == url.password, f"{where}: password differs from `passwords`"
            if component == "edge":
                edge = env["MISTNET_EDGE"]["value"]
                assert url.username == edge, f"{where}: edge {edge} must use its own broker user"
                seen.add(edge)
        assert seen == expected
        for name, deployment in _named("Deployment").items():
            pod = deployment["spec"]["template"]["spec"]
            if name.startswith("mistnet-edge"):
                assert pod.get("nodeName") or pod.get("nodeSelector"), f"{name} is not pinned to its node"
        for _, pod in _pod_specs():
            if any(_component(c) == "edge" for c in pod["containers"]):
                assert pod.get("nodeName") or pod.get("nodeSelector")

    def test_cloud_state_and_probes(self) -> None:
        deployment = _named("Deployment")["mistnet-cloud"]
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        pod = deployment["spec"]["template"]["spec"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        assert claims and claims <= set(_named("PersistentVolumeClaim"))
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] == "/healthz"
            assert container[probe]["httpGet"]["port"] in ports
        env = _named("ConfigMap")["mistnet-job"]["data"]
        assert str(ports["metrics"]) == env["MISTNET_METRICS_PORT"]
        store = _env(container)["MISTNET_STORE"]["value"]
        assert any(store.startswith(m["mountPath"]) for m in container["volumeMounts"])
        service = _named("Service")["mistnet-metrics"]
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"

"""deploy/compose.yaml and deploy/docker/: they parse, reference files that exist, and use real env names.

No Docker engine here: the images are not built and compose is not run; these checks are what can be
verified offline.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml  # type: ignore[import-untyped]

from tests.conftest import REPO
from tests.settings_env import unknown_names

DEPLOY = REPO / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
#: Env of the Python runtime and pip in the Dockerfiles, not mistnet settings.
RUNTIME_ENV = re.compile(r"^(PATH|VIRTUAL_ENV|PYTHON[A-Z_]*|PIP_[A-Z_]*)$")


def _component(service: dict[str, Any]) -> str | None:
    image = str(service.get("image", ""))
    if "mistnet-edge" in image:
        return "edge"
    if "mistnet-cloud" in image:
        return "provision" if "provision" in (service.get("entrypoint") or []) else "cloud"
    return None


def _env_vars_used(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


class TestCompose:
    """Services, mounts, builds, env names, identities and the example .env all line up."""

    def test_services_and_files(self) -> None:
        services = COMPOSE["services"]
        assert {"rabbitmq", "seaweedfs", "provision", "cloud", "edge-a", "edge-b"} <= set(services)
        assert services["rabbitmq"]["image"].startswith("rabbitmq:4-management")
        for name, service in services.items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith(".") and "${" not in source:
                    assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            build = service.get("build")
            if build:
                context = DEPLOY / build["context"]
                assert (context / build["dockerfile"]).is_file() and (context / "pyproject.toml").is_file()
        mounted = {v.split(":")[1] for v in services["rabbitmq"]["volumes"]}
        assert "/etc/rabbitmq/enabled_plugins" in mounted

    def test_env_names_and_identities(self) -> None:
        problems: list[str] = []
        urls = {}
        for name, service in COMPOSE["services"].items():
            component = _component(service)
            if component is None:
                continue
            env = service.get("environment", {})
            problems += unknown_names(dict.fromkeys(env, f"compose {name}"), component)
            if "MISTNET_AMQP_URL" in env:
                urls[name] = urlsplit(re.sub(r"\$\{[^}]*\}", "x", env["MISTNET_AMQP_URL"])).username
                if component == "edge":
                    assert urls[name] == env["MISTNET_EDGE"], f"{name} must use its own broker user"
        assert problems == []
        provisioned = COMPOSE["services"]["provision"]["environment"]["MISTNET_PASSWORDS"]
        users = {pair.split("=", 1)[0] for pair in provisioned.split(",")}
        assert set(urls.values()) <= users

    def test_example_env_defines_every_variable(self) -> None:
        example = (DEPLOY / "compose.env.example").read_text()
        defined = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
        assert _env_vars_used((DEPLOY / "compose.yaml").read_text()) <= defined


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(current)
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


class TestDockerfiles:
    """python:3.11-slim, CPU torch at the pinned versions, a non-root user, a /healthz HEALTHCHECK,
    ``mistnet edge|cloud`` as entry point, real env names, and sources the .dockerignore lets through."""

    def test_dockerfiles(self) -> None:
        dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        pins = {name: version for name, _, version in (dep.partition("==") for dep in dependencies)}
        ignore = (REPO / ".dockerignore").read_text().splitlines()
        for component in ("edge", "cloud"):
            path = DEPLOY / "docker" / f"Dockerfile.{component}"
            instructions = _instructions(path)
            kinds = [kind for kind, _ in instructions]
            assert instructions[0] == ("FROM", "python:3.11-slim"), path
            user = [args for kind, args in instructions if kind == "USER"]
            assert user and user[-1].split(":")[0] not in ("root", "0"), f"{path}: must end as a non-root user"
            assert "HEALTHCHECK" in kinds and "/healthz" in dict(instructions)["HEALTHCHECK"]
            assert dict(instructions)["ENTRYPOINT"] == f'["mistnet", "{component}"]'
            torch = next(args for kind, args in instructions if kind == "RUN" and "torch==" in args)
            assert "download.pytorch.org/whl/cpu" in torch
            assert f"torch=={pins['torch']}" in torch and f"torchvision=={pins['torchvision']}" in torch
            env_names = {}
            for kind, args in instructions:
                if kind == "ENV":
                    for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args):
                        if not RUNTIME_ENV.match(name):
                            env_names[name] = str(path.name)
            assert unknown_names(env_names, component) == []
            for kind, args in instructions:
                if kind == "COPY":
                    for source in args.split()[:-1]:
                        assert (REPO / source).exists(), f"{path}: COPY {source} does not exist"
                        assert f"!{source.rstrip('/')}/" in ignore or f"!{source}" in ignore, (
                            f".dockerignore excludes {source}"
                        )

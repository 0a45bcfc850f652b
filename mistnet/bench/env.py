"""Where the bench runs: the real RabbitMQ and S3, a fresh vhost, users and bucket per run, removed after.

Broker users are global in RabbitMQ, so this run's users carry the run id in their names: a bench
never changes the password of a user a test or a job relies on. Edges are named as their users.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config

from shared.amqp.management import ManagementClient
from shared.amqp.provision import Credentials, JobAccess, provision_job
from shared.blob.s3 import S3Config
from shared.config.cloud import CloudSettings
from shared.config.edge import EdgeSettings

log = logging.getLogger(__name__)

JOB = "bench"
#: Env names of settings the children must not inherit from the bench's own environment.
_SEED_NAMES = {"CUT_LAYER", "EPSILON", "BATCH_SIZE", "AGGREGATION_ALGORITHM", "LEARNING_RATE", "EPOCHS"}


@dataclass(frozen=True)
class Services:
    """The endpoints and admin credentials the bench provisions with (never logged)."""

    amqp_url: str  # an administrator, e.g. amqp://guest:guest@127.0.0.1:5672/
    management_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str

    @property
    def admin(self) -> tuple[str, str]:
        parts = urlsplit(self.amqp_url)
        return parts.username or "guest", parts.password or "guest"

    def management(self) -> ManagementClient:
        return ManagementClient(self.management_url, *self.admin)

    def s3_client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=self.s3_secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )


@dataclass(frozen=True)
class BenchEnv:
    """One run's vhost with job ``bench``: edge users ``<run>-e1..``, a cloud user, a bucket, a scratch folder."""

    services: Services
    run_id: str
    vhost: str
    edges: dict[str, Credentials]
    cloud: Credentials
    bucket: str
    work: Path

    @property
    def job(self) -> str:
        return JOB

    @property
    def edge_names(self) -> list[str]:
        return list(self.edges)

    def amqp_url(self, cred: Credentials | None = None) -> str:
        """The broker URL of ``cred`` (default: the admin) in this run's vhost."""
        parts = urlsplit(self.services.amqp_url)
        user, password = (cred.user, cred.password) if cred else self.services.admin
        host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}"
        return f"{parts.scheme}://{quote(user)}:{quote(password, safe='')}@{host}/{quote(self.vhost, safe='')}"

    def s3_config(self) -> S3Config:
        s = self.services
        return S3Config(s.s3_endpoint, s.s3_access_key, s.s3_secret_key, self.bucket)

    def _common(self) -> dict[str, Any]:
        s = self.services
        return {
            "job": JOB,
            "blob_store": "s3",
            "s3_endpoint_url": s.s3_endpoint,
            "s3_access_key_id": s.s3_access_key,
            "s3_secret_access_key": s.s3_secret_key,
            "bucket": self.bucket,
        }

    def edge_fields(self, edge: str, **fields: Any) -> dict[str, Any]:
        """Settings of ``edge`` as field -> value (for :class:`EdgeSettings` or a child's environment)."""
        return {**self._common(), "edge": edge, "amqp_url": self.amqp_url(self.edges[edge]), **fields}

    def cloud_fields(self, **fields: Any) -> dict[str, Any]:
        return {**self._common(), "amqp_url": self.amqp_url(self.cloud), "device": "cpu", **fields}

    def edge_settings(self, edge: str, **fields: Any) -> EdgeSettings:
        return EdgeSettings(**self.edge_fields(edge, **fields))

    def cloud_settings(self, **fields: Any) -> CloudSettings:
        return CloudSettings(**self.cloud_fields(**fields))


def child_env(fields: Mapping[str, Any]) -> dict[str, str]:
    """Our environment without any mistnet setting, plus ``fields`` as ``MISTNET_<NAME>`` (secrets stay off argv)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_") and k.upper() not in _SEED_NAMES}
    env.update({f"MISTNET_{name.upper()}": str(value) for name, value in fields.items() if value is not None})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def bench_env(services: Services, work: Path, edges: int = 8) -> Iterator[BenchEnv]:
    """Provision a fresh vhost, ``edges`` edge users, a cloud user and a bucket; remove them all afterwards."""
    run_id = f"b{uuid.uuid4().hex[:8]}"
    api = services.management()
    edge_creds = {f"{run_id}-e{i}": Credentials(f"{run_id}-e{i}", secrets.token_hex(12)) for i in range(1, edges + 1)}
    cloud = Credentials(f"{run_id}-cloud", secrets.token_hex(12))
    access = JobAccess(
        vhost=f"mistnet-bench-{run_id}", job=JOB, edges=edge_creds, cloud=cloud, extra_admins=[services.admin[0]]
    )
    s3 = services.s3_client()
    bucket = f"mistnet-bench-{run_id}"
    provision_job(api, access)
    s3.create_bucket(Bucket=bucket)
    try:
        yield BenchEnv(services, run_id, access.vhost, edge_creds, cloud, bucket, work)
    finally:
        _remove(api, access, s3, bucket)


def _remove(api: ManagementClient, access: JobAccess, s3: Any, bucket: str) -> None:
    try:
        api.delete_vhost(access.vhost)
        for cred in [*access.edges.values(), access.cloud]:
            api.delete_user(cred.user)
    except Exception as exc:  # cleanup must not hide the bench's own result or error
        log.warning("could not remove the bench's vhost or users", extra={"error": str(exc)})
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            for start in range(0, len(keys), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
        s3.delete_bucket(Bucket=bucket)
    except Exception as exc:
        log.warning("could not remove the bench's bucket", extra={"bucket": bucket, "error": str(exc)})

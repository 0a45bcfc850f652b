"""Real RabbitMQ and SeaweedFS S3 for integration tests: one vhost and one bucket per test, removed after.

Nothing here mocks a service. If one is missing the test fails saying how to start it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config

from shared.amqp.management import ManagementClient
from shared.amqp.provision import Credentials, JobAccess, provision_job
from shared.blob.s3 import S3Config

AMQP_HOST, AMQP_PORT, MGMT_URL = "127.0.0.1", 5672, "http://127.0.0.1:15672"
S3_URL = "http://127.0.0.1:8333"
S3_ADMIN = ("mistnet-admin", "mistnet-admin-secret")  # deploy/seaweedfs/s3-identities.json
START_HINT = "start the services with `deploy/services.sh start` (or `make services`)"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _services_up() -> None:
    for port, what in ((AMQP_PORT, "RabbitMQ (AMQP)"), (15672, "RabbitMQ management API"), (8333, "SeaweedFS S3")):
        if not _port_open(port):
            pytest.fail(f"{what} is not listening on 127.0.0.1:{port}; {START_HINT}", pytrace=False)


@dataclass(frozen=True)
class Broker:
    """A fresh vhost with a provisioned job: users edge-a, edge-b, cloud and monitor."""

    vhost: str
    job: str
    api: ManagementClient
    edges: dict[str, Credentials]
    cloud: Credentials
    monitor: Credentials

    def url(self, cred: Credentials | None = None) -> str:
        """AMQP URL of ``cred`` (default: the admin, guest) in this vhost."""
        user, password = (cred.user, cred.password) if cred else ("guest", "guest")
        return f"amqp://{user}:{password}@{AMQP_HOST}:{AMQP_PORT}/{self.vhost}"

    def edge_url(self, edge: str) -> str:
        return self.url(self.edges[edge])


@pytest.fixture
def broker() -> Iterator[Broker]:
    api = ManagementClient(MGMT_URL, "guest", "guest")
    vhost = f"mistnet-test-{uuid.uuid4().hex[:10]}"
    job = "testjob"
    edges = {name: Credentials(name, f"{name}-pw") for name in ("edge-a", "edge-b")}
    access = JobAccess(
        vhost=vhost,
        job=job,
        edges=edges,
        cloud=Credentials("cloud", "cloud-pw"),
        monitor=Credentials("monitor", "monitor-pw"),
        extra_admins=["guest"],
    )
    provision_job(api, access)
    try:
        yield Broker(vhost, job, api, edges, access.cloud, Credentials("monitor", "monitor-pw"))
    finally:
        api.delete_vhost(vhost)


def s3_client() -> object:
    return boto3.client(
        "s3",
        endpoint_url=S3_URL,
        aws_access_key_id=S3_ADMIN[0],
        aws_secret_access_key=S3_ADMIN[1],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def s3_bucket() -> Iterator[S3Config]:
    """A new empty bucket and admin credentials for it."""
    client: object = s3_client()
    bucket = f"mistnet-test-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    try:
        yield S3Config(endpoint_url=S3_URL, access_key_id=S3_ADMIN[0], secret_access_key=S3_ADMIN[1], bucket=bucket)
    finally:
        paginator = client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
        for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])  # type: ignore[attr-defined]
        client.delete_bucket(Bucket=bucket)  # type: ignore[attr-defined]

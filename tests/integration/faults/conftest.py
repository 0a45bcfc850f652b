"""The fault suite's own RabbitMQ node and SeaweedFS (loopback, other ports), started once and always stopped.

Faults are injected only into these: the shared services on 5672/15672/8333 keep serving other tests.
Each test gets a fresh vhost and an emptied bucket.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from shared.blob.identities import S3Key, job_identities
from tests.integration.faults.job import BUCKET, EDGES, JOB, FaultJob, FaultStack
from tests.integration.faults.services import FaultRabbit, FaultWeed, port_open
from tests.tls_certs import make_certs


def _admin_s3(stack: FaultStack) -> object:
    return boto3.client(
        "s3",
        endpoint_url=stack.weed.endpoint,
        aws_access_key_id=stack.admin_key.access_key,
        aws_secret_access_key=stack.admin_key.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def _key(role: str) -> S3Key:
    return S3Key(f"{role}-{secrets.token_hex(4)}", secrets.token_urlsafe(24))


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    root = tmp_path_factory.mktemp("fault-services")
    admin, cloud = _key("admin"), _key("cloud")
    edge_keys = {edge: _key(edge) for edge in EDGES}
    identities = job_identities(BUCKET, JOB, edge_keys, cloud, admin)
    tls = make_certs(root / "tls")
    rabbit = FaultRabbit(root / "rabbit", tls=tls)
    weed = FaultWeed(root / "weed", identities, tls=tls)
    rabbit.start()
    try:
        weed.start()
        try:
            stack = FaultStack(rabbit, weed, admin, cloud, edge_keys)
            _admin_s3(stack).create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
            yield stack
        finally:
            weed.stop()
    finally:
        rabbit.stop()


def _empty_bucket(stack: FaultStack) -> None:
    client = _admin_s3(stack)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):  # type: ignore[attr-defined]
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=obj["Key"])  # type: ignore[attr-defined]


@pytest.fixture
async def fault_job(
    fault_stack: FaultStack, tmp_path: Path, coco128: Path, yolov5n_pt: Path
) -> AsyncIterator[FaultJob]:
    """A provisioned job in a new vhost; its daemons are killed and the vhost removed afterwards."""
    # A failed test must not leave a service down or frozen for the next one.
    fault_stack.weed.resume()
    if fault_stack.weed.process is None:
        fault_stack.weed.start()
    if not port_open(fault_stack.rabbit.amqp_port):
        fault_stack.rabbit.start_app()
    _empty_bucket(fault_stack)
    vhost = f"fault-{uuid.uuid4().hex[:10]}"
    job = await FaultJob.create(fault_stack, vhost, tmp_path, coco128, yolov5n_pt)
    try:
        yield job
    finally:
        await job.close()
        fault_stack.api().delete_vhost(vhost)

"""Ingestion on the real broker and S3: every poison case of DESIGN §5 is dead-lettered with its reason
while the daemon keeps consuming; duplicates are stored once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from consumers.cloud.ingest import DETAIL_HEADER, REASON_HEADER
from consumers.cloud.main import cloud_service
from consumers.cloud.service import CloudService
from shared.blob.s3 import S3Config
from shared.wire import names
from shared.wire.features import FeatureBatch, Reason, wire_dict
from tests.integration.cloud_support import (
    Env,
    Released,
    SimulatedEdge,
    as_ref,
    batch_fields,
    cloud_settings,
    drain,
    release_images,
    stored,
    wait_until,
)
from tests.integration.conftest import Broker

pytestmark = pytest.mark.services

#: Small enough that a 2-image batch fits and a 12-image one does not.
MAX_MESSAGE_BYTES = 4096


@pytest.fixture(scope="module")
def released(coco128: Path, yolov5n_pt: Path) -> Released:
    return release_images(coco128, yolov5n_pt, 12)


@pytest.fixture
def env(broker: Broker, s3_bucket: S3Config, tmp_path: Path, released: Released, yolov5n_pt: Path) -> Env:
    return Env(broker, s3_bucket, tmp_path, released, yolov5n_pt)


@dataclass
class Cloud:
    service: CloudService
    store: Path

    def count(self, outcome: str) -> float:
        value = self.service.metrics.registry.get_sample_value("mistnet_cloud_batches_total", {"outcome": outcome})
        return value or 0.0


@asynccontextmanager
async def running_cloud(env: Env) -> AsyncIterator[Cloud]:
    """An ingesting cloud (no edge.done arrives, so no round starts), one delivery at a time."""
    settings = cloud_settings(
        env.broker, env.s3, env.tmp / "store", env.weights, prefetch=1, max_message_bytes=MAX_MESSAGE_BYTES
    )
    async with cloud_service(settings) as service:
        run = asyncio.create_task(service.run())
        await wait_until(lambda: service.status.startswith("waiting"), 30, "the cloud to start consuming")
        try:
            yield Cloud(service, settings.store)
        finally:
            service.request_stop()
            assert await asyncio.wait_for(run, 30) == 0


def bent_wire(fields: dict[str, Any], **changes: Any) -> bytes:
    """The msgpack body of ``fields`` with raw wire values changed after validation."""
    raw = wire_dict(FeatureBatch.model_validate(fields))
    raw.update(changes)
    body: bytes = msgpack.packb(raw, use_bin_type=True)
    return body


SEQ = 7  # every poison message is batch 7 of edge-a (the user-id case claims edge-b's)


async def _undecodable(env: Env, edge: SimulatedEdge) -> None:
    await edge.publish(b"\xc1 this is not msgpack", message_id=names.feature_message_id(env.job, "edge-a", SEQ))


async def _schema_version(env: Env, edge: SimulatedEdge) -> None:
    body = bent_wire(env.batch("edge-a", SEQ, "train", 0, 2), schema=2)
    await edge.publish(body, message_id=names.feature_message_id(env.job, "edge-a", SEQ))


async def _shape_mismatch(env: Env, edge: SimulatedEdge) -> None:
    bits = np.zeros((2, 64, 4, 4), dtype=bool)  # features of a 32-px input in a 64-px job
    targets = env.released.images(0, 2)[1]
    await edge.send(batch_fields(env.job, "edge-a", SEQ, "train", (bits, targets), spec=env.released.spec))


async def _size_mismatch(env: Env, edge: SimulatedEdge) -> None:
    fields = env.batch("edge-a", SEQ, "train", 0, 2)
    body = bent_wire(fields, payload=fields["payload"][:-1])
    await edge.publish(body, message_id=names.feature_message_id(env.job, "edge-a", SEQ))


async def _sha256_mismatch(env: Env, edge: SimulatedEdge) -> None:
    fields = env.batch("edge-a", SEQ, "train", 0, 2)
    await as_ref(fields, env.s3, data=bytes(len(fields["payload"])))
    await edge.send(fields)


async def _missing_object(env: Env, edge: SimulatedEdge) -> None:
    fields = env.batch("edge-a", SEQ, "train", 0, 2)
    await as_ref(fields, env.s3)
    fields["ref"] = fields["ref"].model_copy(update={"uri": fields["ref"].uri.replace(".bin", "-gone.bin")})
    await edge.send(fields)


async def _ref_outside_prefix(env: Env, edge: SimulatedEdge) -> None:
    fields = env.batch("edge-a", SEQ, "train", 0, 2)
    await as_ref(fields, env.s3, key=names.feature_object_key(env.job, "edge-b", "0" * 64))  # edge-b's prefix
    await edge.send(fields)


async def _user_id_mismatch(env: Env, edge: SimulatedEdge) -> None:
    await edge.send(env.batch("edge-b", SEQ, "train", 0, 2))  # edge-a's user and routing key, edge-b's batch


async def _oversize_body(env: Env, edge: SimulatedEdge) -> None:
    await edge.send(env.batch("edge-a", SEQ, "train", 0, 12))


async def _oversize_object(env: Env, edge: SimulatedEdge) -> None:
    fields = env.batch("edge-a", SEQ, "train", 0, 2)
    await as_ref(fields, env.s3, data=fields["payload"] + bytes(1 << 16))  # larger than claimed
    await edge.send(fields)


async def _nan_targets(env: Env, edge: SimulatedEdge) -> None:
    bits, targets = env.released.images(0, 2)
    targets[0, 3] = np.nan
    await edge.send(batch_fields(env.job, "edge-a", SEQ, "train", (bits, targets), spec=env.released.spec))


async def _model_mismatch(env: Env, edge: SimulatedEdge) -> None:
    spec = env.released.spec.model_copy(update={"extractor_sha256": "f" * 64})
    await edge.send(batch_fields(env.job, "edge-a", SEQ, "train", env.released.images(0, 2), spec=spec))


POISON: dict[str, tuple[Reason, Callable[[Env, SimulatedEdge], Awaitable[None]]]] = {
    "undecodable": (Reason.UNDECODABLE, _undecodable),
    "schema-version": (Reason.SCHEMA_VERSION, _schema_version),
    "shape-mismatch": (Reason.SHAPE_MISMATCH, _shape_mismatch),
    "size-mismatch": (Reason.SIZE_MISMATCH, _size_mismatch),
    "sha256-mismatch": (Reason.SHA256_MISMATCH, _sha256_mismatch),
    "missing-object": (Reason.MISSING_OBJECT, _missing_object),
    "ref-outside-prefix": (Reason.REF_OUTSIDE_PREFIX, _ref_outside_prefix),
    "user-id-mismatch": (Reason.USER_ID_MISMATCH, _user_id_mismatch),
    "oversize-body": (Reason.OVERSIZE, _oversize_body),
    "oversize-object": (Reason.OVERSIZE, _oversize_object),
    "nan-targets": (Reason.BAD_TARGETS, _nan_targets),
    "model-mismatch": (Reason.MODEL_MISMATCH, _model_mismatch),
}


class TestPoison:
    """A refused message lands in mistnet.<job>.dead with its reason; the batch sent after it is stored."""

    @pytest.mark.parametrize("case", list(POISON))
    async def test_dead_lettered_and_consuming_goes_on(self, case: str, env: Env) -> None:
        broker, job = env.broker, env.job
        reason, make = POISON[case]
        async with running_cloud(env) as cloud:
            async with SimulatedEdge(broker, "edge-a") as edge:
                await make(env, edge)
                await edge.send(env.batch("edge-a", 0, "train", 0, 2))
            await wait_until(lambda: ("edge-a", 0) in stored(cloud.store), 30, "the valid batch to be stored")
            assert cloud.count("dead") == 1 and cloud.count("stored") == 1
        (dead,) = await drain(broker, names.dead_queue(job))
        assert dead.headers[REASON_HEADER] == reason.value
        assert isinstance(dead.headers[DETAIL_HEADER], str) and dead.headers[DETAIL_HEADER]
        claimed = "edge-b" if case == "user-id-mismatch" else "edge-a"
        assert dead.headers["x-mistnet-original-message-id"] == names.feature_message_id(job, claimed, SEQ)
        assert dead.headers["x-mistnet-original-user-id"] == "edge-a"
        assert dead.routing_key == f"{job}.edge-a"
        assert stored(cloud.store) == {("edge-a", 0)}


class TestDuplicates:
    """A batch re-published with its message id is acknowledged and stored once."""

    async def test_republished_batch_is_stored_once(self, env: Env) -> None:
        broker, job = env.broker, env.job
        async with running_cloud(env) as cloud:
            async with SimulatedEdge(broker, "edge-a") as edge:
                first = env.batch("edge-a", 0, "train", 0, 2)
                await edge.send(first)
                await edge.send(first)
                by_ref = env.batch("edge-a", 1, "train", 2, 2)
                await as_ref(by_ref, env.s3)
                await edge.send(by_ref)
                await edge.send(by_ref)
            await wait_until(lambda: cloud.count("duplicate") == 2, 30, "both duplicates")
            assert cloud.count("stored") == 2 and cloud.count("dead") == 0
        assert stored(cloud.store) == {("edge-a", 0), ("edge-a", 1)}
        assert await drain(broker, names.dead_queue(job)) == []

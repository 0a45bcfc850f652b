"""Helpers of the FedAvg integration tests: settings for both daemons, the round state, hand-made updates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch

from consumers.cloud.fedavg.store import RoundStart, UpdateStore
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.topology import declare_exchanges
from shared.blob.s3 import S3BlobStore, S3Config
from shared.config.cloud import CloudSettings
from shared.config.edge import EdgeSettings
from shared.training.fedavg import serialize_update
from shared.wire import names
from shared.wire.features import BlobRef, sha256_hex
from shared.wire.update import FEDAVG_PRIVACY_NOTE, UPDATE_TYPE, UpdateMessage, encode_update
from shared.yolo.artifact import load_artifact_bytes
from tests.integration.cloud_support import cloud_settings, wait_until
from tests.integration.conftest import Broker
from tests.integration.edge_support import copy_images, edge_settings

IMG_SIZE = 64
CONTROL_TAP = "test.control-tap"


def fedavg_cloud(broker: Broker, s3: S3Config, tmp: Path, weights: Path, **overrides: Any) -> CloudSettings:
    fields: dict[str, Any] = {"aggregation_algorithm": "fedavg", "batch_size": 2, "img_size": IMG_SIZE}
    fields.update(overrides)
    return cloud_settings(broker, s3, tmp / "store", weights, **fields)


def fedavg_edge(
    broker: Broker, s3: S3Config, tmp: Path, coco128: Path, weights: Path, *, edge: str, start: int, count: int = 3
) -> EdgeSettings:
    """Edge ``edge`` of the broker fixture with ``count`` COCO128 images of its own (from ``start``)."""
    data = tmp / f"data-{edge}"
    copy_images(coco128, data, count, start=start)
    return edge_settings(
        broker,
        s3,
        data,
        tmp / f"state-{edge}",
        weights,
        edge=edge,
        amqp_url=broker.edge_url(edge),
        aggregation_algorithm="fedavg",
        batch_size=2,
        device="cpu",
        workers=1,
    )


def open_round(store_dir: Path) -> RoundStart | None:
    """The round the cloud collects updates for, read through a second connection."""
    if not (store_dir / "fedavg.sqlite").is_file():
        return None
    store = UpdateStore(store_dir)
    try:
        return store.open_round()
    finally:
        store.close()


async def wait_for_round(store_dir: Path, round_no: int, timeout_s: float = 60) -> RoundStart:
    await wait_until(
        lambda: (r := open_round(store_dir)) is not None and r.round == round_no, timeout_s, f"round {round_no}"
    )
    start = open_round(store_dir)
    assert start is not None
    return start


async def zero_update(
    s3: S3Config, job: str, edge: str, start: RoundStart, **bend: Any
) -> tuple[dict[str, Any], bytes]:
    """An all-zero update of ``start``'s global model uploaded under ``edge``'s prefix: (message fields, file).

    ``bend``: ``tensors`` replaces the tensor dict, ``key`` the object key, ``data`` the uploaded bytes.
    """
    blobs = S3BlobStore(s3)
    global_state = load_artifact_bytes(await blobs.get(start.global_uri.split("/", 3)[3], 1 << 30), "global").state
    tensors = bend.get("tensors") or {
        k: torch.zeros_like(v, dtype=torch.float16 if v.is_floating_point() else torch.int64)
        for k, v in global_state.items()
    }
    blob = serialize_update(tensors, {})
    digest = sha256_hex(blob)
    key = bend.get("key") or names.update_object_key(job, edge, start.round, digest)
    await blobs.put(key, bend.get("data", blob))
    fields: dict[str, Any] = {
        "schema": 1,
        "type": UPDATE_TYPE,
        "job": job,
        "edge": edge,
        "round": start.round,
        "created_at": time.time(),
        "base_sha256": start.global_sha256,
        "samples": 3,
        "epochs": 1,
        "encoding": "delta",
        "dtype": "float16",
        "ref": BlobRef(uri=f"s3://{s3.bucket}/{key}", size=len(blob), sha256=digest),
        "measurements": {
            "train_s": 0.1,
            "flops": 1.0,
            "peak_rss_bytes": 1,
            "steps": 1,
            "skipped_steps": 0,
            "losses": {"box": 0.1, "obj": 0.1, "cls": 0.1},
            "download_bytes": start.global_size,
            "download_s": 0.1,
        },
        "privacy": {"mechanism": "fedavg", "note": FEDAVG_PRIVACY_NOTE},
    }
    return fields, blob


def update_body(fields: dict[str, Any]) -> bytes:
    return encode_update(UpdateMessage.model_validate(fields))


@asynccontextmanager
async def running(service: Any) -> AsyncIterator[asyncio.Task[int]]:
    """``service.run()`` as a task; on the way out (a failed assertion included) it is stopped and awaited."""
    task = asyncio.create_task(service.run())
    try:
        yield task
    finally:
        if not task.done():
            service.request_stop()
            await asyncio.wait({task}, timeout=30)


async def declare_control_tap(broker: Broker) -> None:
    """A queue receiving a copy of every control message the cloud sends to all edges of the job."""
    connection = await connect(BrokerConfig(broker.url()))
    async with connection:
        channel = await connection.channel()
        await declare_exchanges(channel)
        queue = await channel.declare_queue(CONTROL_TAP, durable=True)
        await queue.bind(names.CONTROL_EXCHANGE, routing_key=names.control_routing_key(broker.job, "all"))

"""Helpers of the edge daemon's integration tests: small datasets, settings, and reading what arrived."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from producers.edge.ledger import LEDGER_FILE
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.topology import QueuePolicy, declare_exchanges, declare_job_queues
from shared.blob.s3 import S3Config
from shared.config.edge import EdgeSettings
from shared.wire import names
from shared.wire.features import FeatureBatch, WireLimits, decode_batch
from tests.integration.conftest import Broker

EVENTS_QUEUE = "test.edge-events"


def copy_images(coco128: Path, dest: Path, count: int, start: int = 0) -> list[Path]:
    """``count`` COCO128 images (sorted, from ``start``) with their labels into ``dest/images|labels``."""
    src_images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[start : start + count]
    (dest / "images").mkdir(parents=True, exist_ok=True)
    (dest / "labels").mkdir(parents=True, exist_ok=True)
    copied = []
    for image in src_images:
        shutil.copy(image, dest / "images" / image.name)
        label = coco128 / "labels" / "train2017" / f"{image.stem}.txt"
        if label.is_file():
            shutil.copy(label, dest / "labels" / label.name)
        copied.append(dest / "images" / image.name)
    return copied


def edge_settings(
    broker: Broker, s3: S3Config, data: Path, state_dir: Path, weights: Path, **overrides: Any
) -> EdgeSettings:
    """Tiny, fast settings for edge-a of the broker fixture's job; ``overrides`` by field name."""
    fields: dict[str, Any] = {
        "job": broker.job,
        "edge": "edge-a",
        "amqp_url": broker.edge_url("edge-a"),
        "data": data,
        "state_dir": state_dir,
        "weights": str(weights),
        "img_size": 64,
        "batch_size": 4,
        "blob_store": "s3",
        "s3_endpoint_url": s3.endpoint_url,
        "s3_access_key_id": s3.access_key_id,
        "s3_secret_access_key": s3.secret_access_key,
        "bucket": s3.bucket,
        "privacy": "none",
        "seed": 7,
        "once": True,
        "val_fraction": 0.0,
        "connect_attempts": 1,
        "publish_attempts": 3,
    }
    fields.update(overrides)
    return EdgeSettings(**fields)


@dataclass(frozen=True)
class Arrived:
    """One message as the cloud would see it."""

    body: bytes
    message_id: str | None
    user_id: str | None
    content_type: str | None
    type: str | None
    delivery_mode: int | None

    def batch(self) -> FeatureBatch:
        return decode_batch(self.body, WireLimits())


async def declare_cloud_side(broker: Broker) -> None:
    """What the cloud declares: the job's inbox, and a queue of the job's edge events for the test."""
    connection = await connect(BrokerConfig(broker.url()))
    async with connection:
        channel = await connection.channel()
        await declare_job_queues(channel, broker.job, QueuePolicy())
        await declare_events_queue(channel, broker.job)


async def declare_events_queue(channel: AbstractChannel, job: str) -> AbstractQueue:
    await declare_exchanges(channel)
    queue = await channel.declare_queue(EVENTS_QUEUE, durable=True)
    await queue.bind(names.EVENTS_EXCHANGE, routing_key=names.event_routing_key(job, "edge.done"))
    return queue


async def drain(broker: Broker, queue_name: str) -> list[Arrived]:
    """Every message now in ``queue_name`` (acknowledged, so removed)."""
    connection = await connect(BrokerConfig(broker.url()))
    arrived = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            arrived.append(
                Arrived(
                    message.body,
                    message.message_id,
                    message.user_id,
                    message.content_type,
                    message.type,
                    int(message.delivery_mode) if message.delivery_mode is not None else None,
                )
            )
    return arrived


async def drain_features(broker: Broker) -> list[Arrived]:
    return await drain(broker, names.features_queue(broker.job))


async def drain_events(broker: Broker) -> list[dict[str, Any]]:
    return [json.loads(a.body) for a in await drain(broker, EVENTS_QUEUE)]


def ledger_rows(state_dir: Path, query: str, *args: object) -> list[tuple[Any, ...]]:
    """Read the ledger as an auditor would (read-only, works while the daemon runs)."""
    db = sqlite3.connect(f"file:{state_dir / LEDGER_FILE}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)

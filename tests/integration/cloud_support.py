"""Helpers of the cloud daemon's integration tests: simulated edges publishing real features, raw.

The edges here are not the edge daemon: they build batches from the shared wire pieces (extractor
features of real COCO128 images, randomised response, packbits) so that every field can be bent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import numpy as np

from consumers.cloud.store import FeatureStore
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.amqp.topology import declare_exchanges
from shared.blob.s3 import S3BlobStore, S3Config
from shared.config.cloud import CloudSettings
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.privacy import PrivacyParams, privacy_params, randomize_bits
from shared.wire import names
from shared.wire.events import EdgeDone, PrivacySummary
from shared.wire.features import (
    CONTENT_TYPE,
    MESSAGE_TYPE,
    BlobRef,
    FeatureBatch,
    ModelSpec,
    PrivacyBlock,
    encode_batch,
    encode_targets,
    pack_bits,
    sha256_hex,
)
from shared.yolo.artifact import extractor_sha256, load_model
from shared.yolo.network import split_model
from tests.integration.conftest import Broker

IMG_SIZE = 64
CUT = 4
PRIVACY: PrivacyParams = privacy_params("rr-sym", 100.0)
EVENTS_QUEUE = "test.cloud-events"


@dataclass(frozen=True)
class Released:
    """Extractor bits of ``count`` images and their targets, as an edge would release them."""

    spec: ModelSpec
    bits: np.ndarray  # (N, C, H, W) bool, already randomised
    targets: list[np.ndarray]  # per image (Mi, 5) [cls, cx, cy, w, h]

    def images(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bits (count, C, H, W), targets (M, 6))`` of images ``start..start+count-1``."""
        rows = [
            np.concatenate([np.full((len(t), 1), i, np.float32), t], axis=1)
            for i, t in enumerate(self.targets[start : start + count])
        ]
        return self.bits[start : start + count], np.concatenate(rows, axis=0).astype(np.float32)


def release_images(coco128: Path, weights: Path, count: int, seed: int = 0) -> Released:
    """Run the real edge part on ``count`` COCO128 images at ``IMG_SIZE``; bits through randomised response."""
    loaded = load_model(weights, IMG_SIZE)
    edge, _ = split_model(loaded.build(), CUT)
    samples = [s for s in discover(coco128) if s.labels is not None][:count]
    bits, targets = [], []
    for batch in iter_batches(samples, IMG_SIZE, count):
        bits.append((edge.extract(batch.images) > 0).numpy())
        t = batch.targets.numpy()
        targets += [t[t[:, 0] == i, 1:] for i in range(len(batch.samples))]
    noisy = randomize_bits(np.concatenate(bits), PRIVACY, np.random.default_rng(seed))
    spec = ModelSpec(
        arch="yolov5n", cut_layer=CUT, img_size=IMG_SIZE, extractor_sha256=extractor_sha256(loaded.state, CUT)
    )
    return Released(spec, noisy, targets)


def batch_fields(
    job: str, edge: str, seq: int, split: str, images: tuple[np.ndarray, np.ndarray], *, spec: ModelSpec
) -> dict[str, Any]:
    """The wire map of an inline batch of ``images`` (bits, targets); tests bend fields before :func:`build`."""
    bits, targets = images
    n, c, h, w = bits.shape
    return {
        "schema": 1,
        "type": MESSAGE_TYPE,
        "job": job,
        "edge": edge,
        "seq": seq,
        "split": split,
        "created_at": time.time(),
        "model": spec,
        "privacy": PrivacyBlock.model_validate(PRIVACY.to_wire(c * h * w)),
        "shape": [n, c, h, w],
        "encoding": "packbits",
        "payload": pack_bits(bits),
        "image_ids": [f"{edge}{seq:04d}{i:04d}".encode().hex()[:16] for i in range(n)],
        "targets": encode_targets(targets),
    }


def build(fields: dict[str, Any]) -> bytes:
    return encode_batch(FeatureBatch.model_validate(fields))


async def as_ref(fields: dict[str, Any], s3: S3Config, key: str | None = None, data: bytes | None = None) -> None:
    """Move the inline payload to S3 (under the edge's prefix unless ``key`` says otherwise)."""
    payload: bytes = fields.pop("payload")
    digest = sha256_hex(payload)
    key = key or names.feature_object_key(fields["job"], fields["edge"], digest)
    await S3BlobStore(s3).put(key, payload if data is None else data)
    fields["ref"] = BlobRef(uri=f"s3://{s3.bucket}/{key}", size=len(payload), sha256=digest)


class SimulatedEdge:
    """Publishes as broker user ``user`` (default: the edge's own user) with confirms."""

    def __init__(self, broker: Broker, edge: str):
        self.broker = broker
        self.edge = edge
        self.user = broker.edges[edge].user
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None

    async def __aenter__(self) -> SimulatedEdge:
        self._connection = await connect(BrokerConfig(self.broker.edge_url(self.edge)))
        self._publisher = ConfirmedPublisher(self._connection, attempts=2, backoff_s=0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._connection is not None
        await self._connection.close()

    async def publish(
        self,
        body: bytes,
        *,
        message_id: str,
        content_type: str = CONTENT_TYPE,
        type: str = MESSAGE_TYPE,
    ) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            OutgoingMessage(
                names.FEATURES_EXCHANGE,
                names.features_routing_key(self.broker.job, self.edge),
                body,
                message_id=message_id,
                content_type=content_type,
                type=type,
                user_id=self.user,
            )
        )

    async def send(self, fields: dict[str, Any]) -> None:
        """A batch with its own deterministic message id."""
        await self.publish(
            build(fields), message_id=names.feature_message_id(fields["job"], fields["edge"], fields["seq"])
        )

    async def done(self, batches: int, train_images: int, val_images: int) -> None:
        assert self._publisher is not None
        event = EdgeDone(
            job=self.broker.job,
            source=self.edge,
            edge=self.edge,
            images_released=train_images + val_images,
            train_images=train_images,
            val_images=val_images,
            batches=batches,
            bytes_sent=0,
            privacy=PrivacySummary(mechanism="rr-sym", epsilon=100.0, epsilon_bit=50.0, epsilon_image=None),
        )
        await self._publisher.publish(
            OutgoingMessage(
                names.EVENTS_EXCHANGE,
                names.event_routing_key(self.broker.job, "edge.done"),
                event.to_json(),
                message_id=event.id,
                content_type="application/json",
                type="edge.done",
                user_id=self.user,
            )
        )


@dataclass(frozen=True)
class Env:
    """What a cloud test needs: the broker's job, a bucket, a scratch folder, released features, the weights."""

    broker: Broker
    s3: S3Config
    tmp: Path
    released: Released
    weights: Path

    @property
    def job(self) -> str:
        return self.broker.job

    def batch(self, edge: str, seq: int, split: str, start: int, count: int) -> dict[str, Any]:
        """Wire map of ``count`` released images from ``start``, as batch ``seq`` of ``edge``."""
        return batch_fields(self.job, edge, seq, split, self.released.images(start, count), spec=self.released.spec)


def cloud_settings(broker: Broker, s3: S3Config, store: Path, weights: Path, **overrides: Any) -> CloudSettings:
    """Tiny, fast settings for the broker fixture's job, as the provisioned ``cloud`` user."""
    fields: dict[str, Any] = {
        "job": broker.job,
        "amqp_url": broker.url(broker.cloud),
        "blob_store": "s3",
        "s3_endpoint_url": s3.endpoint_url,
        "s3_access_key_id": s3.access_key_id,
        "s3_secret_access_key": s3.secret_access_key,
        "bucket": s3.bucket,
        "weights": str(weights),
        "img_size": IMG_SIZE,
        "cut_layer": CUT,
        "privacy": "rr-sym",
        "epsilon": 100.0,
        "edges": "edge-a,edge-b",
        "rounds": 1,
        "epochs": 1,
        "batch_size": 4,
        "store": store,
        "device": "cpu",
        "seed": 3,
    }
    fields.update(overrides)
    return CloudSettings(**fields)


async def declare_events_queue(broker: Broker) -> None:
    """A queue of the job's cloud events (round.completed, job.completed), declared before the cloud runs."""
    connection = await connect(BrokerConfig(broker.url()))
    async with connection:
        channel = await connection.channel()
        await declare_exchanges(channel)
        queue = await channel.declare_queue(EVENTS_QUEUE, durable=True)
        for kind in ("round.completed", "job.completed"):
            await queue.bind(names.EVENTS_EXCHANGE, routing_key=names.event_routing_key(broker.job, kind))


async def drain(broker: Broker, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message now in ``queue_name`` (acknowledged, so removed)."""
    connection = await connect(BrokerConfig(broker.url()))
    arrived = []
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            arrived.append(message)
    return arrived


def events(messages: list[aio_pika.abc.AbstractIncomingMessage], kind: str) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in messages if m.type == kind]


async def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


def stored(store_dir: Path) -> set[tuple[str, int]]:
    """``(edge, seq)`` of every batch in a cloud store, read through a second connection as an operator would."""
    store = FeatureStore(store_dir)
    try:
        return {(b.edge, b.seq) for split in ("train", "val") for b in store.batches(split)}
    finally:
        store.close()


def labelled_folder(coco128: Path, dest: Path, count: int, start: int) -> Path:
    """A YOLO folder of ``count`` labelled COCO128 images (symlinks), skipping the first ``start``."""
    samples = [s for s in discover(coco128) if s.labels is not None][start : start + count]
    for sub in ("images", "labels"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        assert sample.labels is not None
        (dest / "images" / sample.image.name).symlink_to(sample.image)
        (dest / "labels" / sample.labels.name).symlink_to(sample.labels)
    return dest

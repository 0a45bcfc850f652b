"""Simulated edges: synthetic feature batches sent through the edge's real claim-check path (S3, then confirms).

The payload is random packed bits (what randomised response makes of any image at a small ε), the
labels random valid boxes. Messages are built by the edge's own :func:`build_message`, and sent as
the edge daemon sends them: object first, then a persistent, confirmed, ``mandatory`` publish as the
edge's own broker user, at most ``MAX_SENDS_IN_FLIGHT`` at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType

import numpy as np

from mistnet.bench.env import BenchEnv
from producers.edge.ledger import OutboxRecord, Split
from producers.edge.release import ReleaseSpec, build_message
from producers.edge.service import MAX_SENDS_IN_FLIGHT
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.blob.s3 import S3BlobStore
from shared.privacy import PrivacyParams, privacy_params
from shared.wire import names
from shared.wire.events import JSON_CONTENT_TYPE, EdgeDone, PrivacySummary
from shared.wire.features import CONTENT_TYPE, MESSAGE_TYPE, ModelSpec

#: What the cloud's default settings expect (rr-sym at ε = 100, the seed job's default).
PRIVACY: PrivacyParams = privacy_params("rr-sym", 100.0)


def release_spec(env: BenchEnv, edge: str, model: ModelSpec, chw: tuple[int, int, int]) -> ReleaseSpec:
    """The spec of an edge releasing ``chw`` features of ``model`` into this run's bucket (1 MiB inline threshold)."""
    return ReleaseSpec(
        job=env.job,
        edge=edge,
        model=model,
        privacy=PRIVACY,
        feature_shape=chw,
        inline_threshold_bytes=1 << 20,
        uri_of=lambda key: f"s3://{env.bucket}/{key}",
    )


def random_targets(images: int, rng: np.random.Generator, num_classes: int = 80) -> np.ndarray:
    """``(M, 6) float32 [img, cls, cx, cy, w, h]``: one to three valid boxes an image."""
    rows = []
    for image in range(images):
        for _ in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(0.05, 0.5, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            rows.append([image, int(rng.integers(num_classes)), cx, cy, w, h])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 6)


def synthetic_batches(
    spec: ReleaseSpec, batches: int, batch_size: int, rng: np.random.Generator, *, split: Split = "train",
    first_seq: int = 0,
) -> Iterator[OutboxRecord]:  # fmt: skip
    """``batches`` messages of ``batch_size`` images of random bits, numbered from ``first_seq``, made lazily."""
    image_bytes = spec.bits_per_image // 8
    for seq in range(first_seq, first_seq + batches):
        payload = rng.bytes(batch_size * image_bytes)
        ids = [f"{seq:016x}{i:016x}" for i in range(batch_size)]
        targets = random_targets(batch_size, rng)
        yield build_message(payload, targets, image_ids=ids, split=split, seq=seq, spec=spec, created_at=time.time())


class EdgeSender:
    """One simulated edge's broker connection, confirmed publisher and S3 client, as the edge daemon builds them."""

    def __init__(self, env: BenchEnv, edge: str):
        self.env = env
        self.edge = edge
        self.blob = S3BlobStore(env.s3_config())
        self._publisher: ConfirmedPublisher | None = None
        self._close: list[object] = []

    async def __aenter__(self) -> EdgeSender:
        connection = await connect(BrokerConfig(self.env.amqp_url(self.env.edges[self.edge]), name=self.edge))
        self._close.append(connection)
        self._publisher = ConfirmedPublisher(connection)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._publisher is not None:
            await self._publisher.close()
        for connection in self._close:
            await connection.close()  # type: ignore[attr-defined]

    async def send(self, record: OutboxRecord) -> None:
        """Claim check first (S3 put), then the message with its confirm: the order the edge daemon keeps."""
        assert self._publisher is not None
        if record.object_key is not None:
            assert record.payload is not None
            await self.blob.put(record.object_key, record.payload)
        await self._publisher.publish(
            OutgoingMessage(
                names.FEATURES_EXCHANGE,
                names.features_routing_key(self.env.job, self.edge),
                record.body,
                message_id=record.message_id,
                content_type=CONTENT_TYPE,
                type=MESSAGE_TYPE,
                user_id=self.edge,
            )
        )

    async def send_all(self, records: Iterable[OutboxRecord], in_flight: int = MAX_SENDS_IN_FLIGHT) -> None:
        """Every record, ``in_flight`` at a time (the edge daemon's window); records are taken as slots free."""
        pending: set[asyncio.Task[None]] = set()
        try:
            for record in records:
                if len(pending) >= in_flight:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
                pending.add(asyncio.create_task(self.send(record)))
            await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()

    async def done(self, records: Sequence[OutboxRecord], chw: tuple[int, int, int]) -> None:
        """``edge.done`` for ``records`` (seqs 0..n-1): the cloud may start round 1 once they are stored."""
        assert self._publisher is not None
        train = sum(r.images for r in records if r.split == "train")
        val = sum(r.images for r in records if r.split == "val")
        bits = chw[0] * chw[1] * chw[2]
        event = EdgeDone(
            job=self.env.job,
            source=f"edge/{self.edge}",
            edge=self.edge,
            images_released=train + val,
            train_images=train,
            val_images=val,
            batches=len(records),
            bytes_sent=sum(r.wire_bytes for r in records),
            privacy=PrivacySummary(
                mechanism=PRIVACY.mechanism.value,
                epsilon=PRIVACY.epsilon,
                epsilon_bit=PRIVACY.epsilon_bit,
                epsilon_image=PRIVACY.epsilon_image(bits),
            ),
        )
        await self._publisher.publish(
            OutgoingMessage(
                names.EVENTS_EXCHANGE,
                names.event_routing_key(self.env.job, "edge.done"),
                event.to_json(),
                message_id=f"edge.done:{self.env.job}:{self.edge}:{len(records)}",
                content_type=JSON_CONTENT_TYPE,
                type=event.type,
                user_id=self.edge,
            )
        )

"""The edge daemon's loop: resend the outbox, scan, release (persist, upload, publish), announce edge.done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from producers.edge.batching import BatchEncoder, Staged
from producers.edge.done import done_message_id, edge_done_event
from producers.edge.extract import extract_pieces, extract_workers
from producers.edge.intake import Candidate, Intake, ScanResult
from producers.edge.ledger import Ledger, OutboxRecord
from producers.edge.metrics import EdgeMetrics
from producers.edge.pipeline import StagedPipeline
from producers.edge.release import ReleaseSpec
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.blob.store import BlobStore
from shared.config.edge import EdgeSettings
from shared.dataset.sources import DatasetError
from shared.wire import names
from shared.wire.events import JSON_CONTENT_TYPE
from shared.wire.features import CONTENT_TYPE, MESSAGE_TYPE
from shared.yolo.network import EdgeExtractor

log = logging.getLogger(__name__)

#: Batches published but not yet confirmed at any time (bounds spooled memory, overlaps the network).
MAX_SENDS_IN_FLIGHT = 2
#: After a stop, how long in-flight sends may still take before they are left to the outbox.
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class EdgeClients:
    """What the composition root builds and the service only uses."""

    ledger: Ledger
    extractor: EdgeExtractor
    publisher: ConfirmedPublisher
    blob: BlobStore
    metrics: EdgeMetrics


class EdgeService:
    """Releases every new image exactly once, then says so with ``edge.done``; watches for more."""

    def __init__(
        self,
        settings: EdgeSettings,
        spec: ReleaseSpec,
        clients: EdgeClients,
        *,
        seeds: np.random.SeedSequence,
        num_classes: int,
        clock: Callable[[], float] = time.time,
        show_progress: bool = False,
    ):
        self._settings = settings
        self._spec = spec
        self._c = clients
        self._seeds = seeds
        self._num_classes = num_classes
        self._clock = clock
        self._show_progress = show_progress
        self._user = settings.broker_user
        self._bits_per_image = spec.bits_per_image
        self.last_error: str | None = None

    def _extra(self, **fields: Any) -> dict[str, Any]:
        return {"job": self._settings.job, "edge": self._settings.edge, **fields}

    def health(self) -> tuple[bool, str]:
        return (self.last_error is None, self.last_error or "ok")

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` (or, with ``once``, until the first edge.done); raises on a fatal error."""
        try:
            await self._run(stop)
        except Exception as exc:
            self.last_error = str(exc)
            raise

    async def _run(self, stop: asyncio.Event) -> None:
        s = self._settings
        run = await asyncio.to_thread(self._c.ledger.start_run)
        intake = Intake(s.data, self._c.ledger, val_fraction=s.val_fraction, re_release=s.re_release, run=run)
        pending = await asyncio.to_thread(self._c.ledger.pending, s.job)
        if pending:
            log.info("re-sending unconfirmed batches from the outbox", extra=self._extra(batches=len(pending)))
            self._c.metrics.outbox_batches.set(len(pending))
            await self._drain(deque(asyncio.create_task(self._send(r)) for r in pending), stop)
        first = True
        while not stop.is_set():
            scan = await self._scan(intake, 0.0 if first else s.min_file_age_s)
            released = await self._release(scan.candidates, run, stop) if scan.candidates else 0
            if stop.is_set():
                break
            if first or released:
                await self._publish_done()
            first = False
            if s.once:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.poll_interval_s)
        log.info("stopping", extra=self._extra())

    async def _scan(self, intake: Intake, min_age_s: float) -> ScanResult:
        try:
            scan = await asyncio.to_thread(intake.scan, min_age_s)
        except (DatasetError, OSError) as exc:
            if self._settings.on_bad_input == "error":
                raise
            log.warning("cannot scan the dataset, retrying later: %s", exc, extra=self._extra())
            return ScanResult([], 0, 0)
        if scan.candidates:
            val = sum(c.split == "val" for c in scan.candidates)
            log.info(
                "new images to release",
                extra=self._extra(
                    images=len(scan.candidates), val=val, already_released=scan.already_released, deferred=scan.deferred
                ),
            )
        return scan

    async def _release(self, candidates: list[Candidate], run: int, stop: asyncio.Event) -> int:
        """Persist-then-send every batch of ``candidates``; returns how many images were released."""
        s = self._settings
        groups = [g for g in ([c for c in candidates if c.split == split] for split in ("train", "val")) if g]
        stopping = threading.Event()
        source = extract_pieces(
            groups,
            self._c.extractor,
            img_size=s.img_size,
            chunk=min(s.extract_chunk, s.batch_size),
            on_error="skip" if s.on_bad_input == "skip" else "raise",
            workers=s.workers,
            num_classes=self._num_classes,
            stop=stopping,
            extractors=extract_workers(self._c.extractor, s.extract_workers),
        )
        first_seq = await asyncio.to_thread(self._c.ledger.next_seq, s.job)
        encoder = BatchEncoder(self._spec, self._seeds, first_seq=first_seq, batch_size=s.batch_size, clock=self._clock)
        pipeline = StagedPipeline(source, encoder, stopping=stopping)
        sends: deque[asyncio.Task[None]] = deque()
        released = 0
        failure: BaseException | None = None
        bar = tqdm(total=len(candidates), unit="img", desc=f"edge {s.edge}", disable=not self._show_progress)
        stopped = asyncio.ensure_future(stop.wait())
        pipeline.start()
        try:
            while True:
                getter = asyncio.ensure_future(pipeline.next())
                await asyncio.wait({getter, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    getter.cancel()  # the batch in hand was not persisted: abandon it
                    break
                staged = getter.result()
                if staged is None:
                    break
                await self._persist(staged, run)
                released += len(staged.released)
                bar.update(len(staged.released) + len(staged.skipped))
                if staged.record is not None:
                    sends.append(asyncio.create_task(self._send(staged.record)))
                while sends and (sends[0].done() or len(sends) > MAX_SENDS_IN_FLIGHT) and not stop.is_set():
                    await asyncio.wait({sends[0], stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if sends[0].done():
                        await sends.popleft()  # raises if that send failed
        except Exception as exc:
            failure = exc
        finally:
            stopped.cancel()
            bar.close()
            await pipeline.close()
        try:
            await self._drain(sends, stop)
        except Exception as exc:
            failure = failure or exc
        if failure is not None:
            raise failure
        return released

    async def _persist(self, staged: Staged, run: int) -> None:
        released = [c.record() for c in staged.released]
        skipped = [c.record(reason) for c, reason in staged.skipped]
        epsilon = self._spec.privacy.epsilon_image(self._bits_per_image)
        await asyncio.to_thread(self._c.ledger.persist_batch, staged.record, released, skipped, epsilon, run)
        for candidate, reason in staged.skipped:
            self._c.metrics.images_skipped.inc()
            log.warning("image skipped", extra=self._extra(image_path=str(candidate.sample.image), reason=reason))
        if staged.record is not None:
            self._c.metrics.outbox_batches.inc()

    async def _send(self, record: OutboxRecord) -> None:
        """Upload (claim check) then publish with confirm, then mark confirmed: never the other way round."""
        extra = self._extra(seq=record.seq, message_id=record.message_id)
        path = "inline"
        if record.object_key is not None:
            assert record.payload is not None
            started = time.perf_counter()
            await self._c.blob.put(record.object_key, record.payload)
            self._c.metrics.s3_put_seconds.observe(time.perf_counter() - started)
            path = "s3"
        started = time.perf_counter()
        await self._c.publisher.publish(
            OutgoingMessage(
                names.FEATURES_EXCHANGE,
                names.features_routing_key(record.job, self._settings.edge),
                record.body,
                message_id=record.message_id,
                content_type=CONTENT_TYPE,
                type=MESSAGE_TYPE,
                user_id=self._user,
            )
        )
        confirm_s = time.perf_counter() - started
        self._c.metrics.publish_confirm_seconds.observe(confirm_s)
        await asyncio.to_thread(self._c.ledger.mark_confirmed, record.job, record.seq)
        m = self._c.metrics
        m.outbox_batches.dec()
        m.batches.labels(record.split).inc()
        m.images.labels(record.split).inc(record.images)
        m.bytes.labels(path).inc(record.wire_bytes)
        log.info(
            "batch confirmed",
            extra={**extra, "split": record.split, "images": record.images, "bytes": record.wire_bytes, "path": path},
        )

    async def _drain(self, sends: deque[asyncio.Task[None]], stop: asyncio.Event) -> None:
        """Wait for every send or the first failure; after a stop, ``STOP_GRACE_S`` at most (the rest stays queued)."""
        if not sends:
            return
        finished = asyncio.ensure_future(asyncio.wait(sends, return_when=asyncio.FIRST_EXCEPTION))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not finished.done():
                await asyncio.wait({finished}, timeout=STOP_GRACE_S)
        finally:
            finished.cancel()
            stopped.cancel()
            left = [t for t in sends if not t.done()]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            if left:
                log.warning("batches left in the outbox for the next start", extra=self._extra(batches=len(left)))
        for task in sends:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _publish_done(self) -> None:
        s = self._settings
        totals = await asyncio.to_thread(self._c.ledger.totals, s.job)
        done = edge_done_event(s.job, s.edge, totals, self._spec.privacy, self._bits_per_image)
        message_id = done_message_id(s.job, s.edge, totals)
        await self._c.publisher.publish(
            OutgoingMessage(
                names.EVENTS_EXCHANGE,
                names.event_routing_key(s.job, "edge.done"),
                done.to_json(),
                message_id=message_id,
                content_type=JSON_CONTENT_TYPE,
                type=done.type,
                user_id=self._user,
            )
        )
        self._c.metrics.done_events.inc()
        log.info(
            "edge.done published",
            extra=self._extra(
                message_id=message_id, batches=done.batches, images=done.images_released, bytes=done.bytes_sent
            ),
        )

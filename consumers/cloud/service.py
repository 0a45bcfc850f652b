"""The cloud daemon: ingests feature batches and ``edge.done`` events while rounds train in a worker thread.

Ingestion never pauses for training: each delivery is acknowledged once stored (or dead-lettered),
so nothing is held unacknowledged across a round; batches stored during round k join round k+1.
``edge.done`` events are read from the events stream from its first offset, so an edge that finished
before the cloud started is still counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from consumers.cloud.ingest import Delivery, Duplicate, Expectations, Rejected, Stored, dead_letter, ingest
from consumers.cloud.job import RoundRunner
from consumers.cloud.metrics import CloudMetrics
from consumers.cloud.rounds import FinishJob, Progress, RoundPolicy, Wait, decide
from consumers.cloud.store import EdgeAnnouncement, FeatureStore
from consumers.cloud.trainer import TrainingInterruptedError
from consumers.cloud.transient import RequeueError, TransientRetry
from shared.amqp.connection import close_all, retry_while_queues_recover
from shared.amqp.publisher import ConfirmedPublisher
from shared.amqp.topology import QueuePolicy, declare_events_stream, declare_job_queues
from shared.blob.store import BlobStore
from shared.config.cloud import CloudSettings
from shared.wire import names
from shared.wire.events import EdgeDone, parse_event

log = logging.getLogger(__name__)

#: Seconds in-flight ingests get to finish at shutdown before their deliveries are left to requeue.
_DRAIN_S = 10.0
_EVENTS_PREFETCH = 64
#: Readiness for round 1 is re-read from the store at most this often: each read scans the index, and
#: re-reading after every stored batch starved ingestion as the store grew (found by tests/soak.py).
_RECHECK_S = 0.5


class CloudService:
    """Wires ingestion, the round policy and the :class:`RoundRunner`; ``run`` returns the exit code."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        connection: AbstractRobustConnection,
        publisher: ConfirmedPublisher,
        blobs: BlobStore,
        store: FeatureStore,
        runner: RoundRunner,
        expect: Expectations,
        metrics: CloudMetrics,
    ):
        self.settings = settings
        self.connection = connection
        self.publisher = publisher
        self.blobs = blobs
        self.store = store
        self.runner = runner
        self.expect = expect
        self.metrics = metrics
        self.policy = RoundPolicy(
            settings.rounds, settings.expected_edges, settings.min_edges, settings.start_deadline_s
        )
        self.status = "starting"
        self.completed_rounds = 0
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._started = time.monotonic()

    def request_stop(self) -> None:
        """SIGTERM: stop taking work, stop training at the next step, exit once the state is safe."""
        if not self._stop.is_set():
            log.info("stop requested", extra={"job": self.settings.job})
        self._stop.set()
        self.runner.stop.set()

    def health(self) -> tuple[bool, str]:
        ok = not self.connection.is_closed
        return ok, f"{'ok' if ok else 'broker connection closed'}: {self.status}\n"

    async def run(self) -> int:
        """Serve until every round is done (0), or until stopped (0, after a safe shutdown)."""
        self.completed_rounds = await asyncio.to_thread(self.runner.resume)
        consumers: list[tuple[AbstractQueue, str]] = []
        channels: list[AbstractChannel] = []
        try:
            await retry_while_queues_recover(lambda: self._subscribe(channels, consumers), what="cloud subscriptions")
            if await self._until_stopped(self.runner.publish_pending()):
                await self._round_loop()
        except TrainingInterruptedError as exc:
            log.info("round abandoned; the last completed round's checkpoint stands", extra={"detail": str(exc)})
        finally:
            self._stop.set()
            self.runner.stop.set()
            for queue, tag in consumers:
                try:
                    await queue.cancel(tag)
                except Exception as exc:  # the channel may already be gone; its deliveries requeue then
                    log.warning("could not cancel a consumer", extra={"error": repr(exc)})
            if self._inflight:
                await asyncio.wait(self._inflight, timeout=_DRAIN_S)
            await close_all(channels)
        return 0

    async def _subscribe(self, channels: list[AbstractChannel], consumers: list[tuple[AbstractQueue, str]]) -> None:
        """Declare the job's queues and the events stream and consume both; channels of a failed try are closed."""
        await close_all(channels)
        consumers.clear()
        policy = QueuePolicy(delivery_limit=self.settings.delivery_limit)
        channel = await self.connection.channel()
        channels.append(channel)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        inbox = await declare_job_queues(channel, self.settings.job, policy)
        events_channel = await self.connection.channel()
        channels.append(events_channel)
        await events_channel.set_qos(prefetch_count=_EVENTS_PREFETCH)
        stream = await declare_events_stream(events_channel, policy)
        consumers.append((inbox, await inbox.consume(self._on_feature)))
        consumers.append((stream, await stream.consume(self._on_event, arguments={"x-stream-offset": "first"})))

    async def _round_loop(self) -> None:
        last_reason = ""
        while not self._stop.is_set():
            decision = decide(self.policy, self._progress())
            if isinstance(decision, FinishJob):
                self.status = "job completed"
                await self._until_stopped(self.runner.finish_job())
                return
            if isinstance(decision, Wait):
                if decision.reason != last_reason:
                    log.info("waiting to start round 1", extra={"job": self.settings.job, "reason": decision.reason})
                    last_reason = decision.reason
                self.status = f"waiting: {decision.reason}"
                await self._wait_for_change(1.0)
                continue
            log.info("starting round", extra={"round": decision.round, "reason": decision.reason})
            self.status = f"training round {decision.round}"
            completed = await self.runner.run_round(decision.round)
            self.completed_rounds = completed.round
            if not await self._until_stopped(self.runner.publish(completed)):
                return

    def _progress(self) -> Progress:
        waited = time.monotonic() - self._started
        if self.completed_rounds:
            return Progress(self.completed_rounds, waited)
        announced = {edge: a.batches for edge, a in self.store.announcements().items()}
        return Progress(0, waited, announced, self.store.seqs_by_edge(), self.store.train_edges())

    async def _wait_for_change(self, timeout_s: float) -> None:
        waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waiters[1:], timeout=_RECHECK_S)  # at most one readiness check per _RECHECK_S
        await asyncio.wait(waiters, timeout=max(timeout_s - _RECHECK_S, 0), return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self._changed.clear()

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` unless a stop comes first (then it is cancelled); True when it finished."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        task.result()
        return True

    # --- feature batches ---------------------------------------------------------------------------

    def _retry(self, context: dict[str, Any]) -> TransientRetry:
        def on_retry(exc: BaseException, pause: float) -> None:
            self.metrics.batches.labels("retried").inc()
            log.warning(
                "transient ingest failure; retrying",
                extra={**context, "retry_in_s": round(pause, 2), "error": f"{type(exc).__name__}: {exc}"},
            )

        return TransientRetry(self.settings.ingest_retry_s, self._stop, on_retry)

    async def _on_feature(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with message.process(requeue=True):
                await self._ingest(message)
        except RequeueError:
            pass
        except Exception:
            log.exception("ingest failed; the message is requeued", extra={"message_id": message.message_id})
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _ingest(self, message: AbstractIncomingMessage) -> None:
        delivery = Delivery(
            body=message.body,
            message_id=message.message_id,
            user_id=message.user_id,
            type=message.type,
            content_type=message.content_type,
            routing_key=message.routing_key,
            timestamp=message.timestamp.timestamp() if message.timestamp else None,
        )
        context = {"job": self.settings.job, "message_id": delivery.message_id, "user_id": delivery.user_id}
        try:
            outcome = await self._retry(context).run(lambda: ingest(delivery, self.expect, self.blobs, self.store))
        except RequeueError as exc:
            self.metrics.batches.labels("requeued").inc()
            log.warning("transient ingest failure persists; requeueing", extra={**context, "error": str(exc)})
            raise
        if isinstance(outcome, Rejected):
            await self.publisher.publish(dead_letter(delivery, self.settings.job, outcome))
            self.metrics.batches.labels("dead").inc()
            log.warning(
                "feature batch refused", extra={**context, "reason": outcome.reason.value, "detail": outcome.detail}
            )
        elif isinstance(outcome, Duplicate):
            self.metrics.batches.labels("duplicate").inc()
            log.info("duplicate feature batch acknowledged", extra={**context, "edge": outcome.edge})
        else:
            self._count_stored(outcome, delivery)
            log.debug("feature batch stored", extra={**context, "edge": outcome.edge, "images": outcome.images})
            self._changed.set()

    def _count_stored(self, outcome: Stored, delivery: Delivery) -> None:
        m = self.metrics
        m.batches.labels("stored").inc()
        m.received_bytes.inc(outcome.wire_bytes)
        if outcome.fetch_s:
            m.s3_get.observe(outcome.fetch_s)
        if delivery.timestamp:
            m.ingest_lag.observe(max(time.time() - delivery.timestamp, 0.0))

    # --- events ------------------------------------------------------------------------------------

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        try:
            if message.routing_key == names.event_routing_key(self.settings.job, "edge.done"):
                await self._on_edge_done(message)
        except ValueError as exc:  # malformed JSON or fields: pydantic's ValidationError is a ValueError
            log.warning("ignoring a malformed edge.done event", extra={"error": str(exc)[:300]})
        finally:
            if not message.channel.is_closed:
                await message.ack()

    async def _on_edge_done(self, message: AbstractIncomingMessage) -> None:
        done = EdgeDone.model_validate(parse_event(message.body))
        if done.job != self.settings.job:
            return
        if not self.settings.speakers.allows(message.user_id, done.edge):
            log.warning(
                "ignoring edge.done from a user that may not speak for its edge",
                extra={"edge": done.edge, "user_id": message.user_id},
            )
            return
        announcement = EdgeAnnouncement(done.edge, done.batches, done.train_images, done.val_images, done.id)
        await asyncio.to_thread(self.store.announce, announcement)
        log.info("edge done", extra={"job": done.job, "edge": done.edge, "batches": done.batches})
        self._changed.set()

"""The cloud daemon in FedAvg mode: one loop opens rounds, waits on the policy, aggregates; updates flow in.

Updates arrive on the job's features queue (the same quorum inbox MistNet uses) and are dispatched by
AMQP type: ``mistnet.update`` is ingested, anything else is dead-lettered with a reason. A delivery is
acknowledged once its update is stored, recognised as a duplicate or straggler, or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from consumers.cloud.fedavg.ingest import (
    StoredUpdateOutcome,
    Straggler,
    UpdateExpectations,
    UpdateOutcome,
    ingest_update,
)
from consumers.cloud.fedavg.policy import Aggregate, FedAvgPolicy, RoundView, decide
from consumers.cloud.fedavg.rounds import FedAvgRounds
from consumers.cloud.fedavg.store import RoundStart
from consumers.cloud.ingest import Delivery, Duplicate, Rejected, dead_letter
from consumers.cloud.metrics import CloudMetrics
from consumers.cloud.outbox import RoundOutbox
from consumers.cloud.trainer import TrainingInterruptedError
from consumers.cloud.transient import RequeueError, TransientRetry
from shared.amqp.connection import close_all, retry_while_queues_recover
from shared.amqp.topology import QueuePolicy, declare_control_queue, declare_events_stream, declare_job_queues
from shared.config.cloud import CloudSettings
from shared.training.fedavg import sample_weights
from shared.wire.features import Reason
from shared.wire.update import UPDATE_TYPE

log = logging.getLogger(__name__)

_DRAIN_S = 10.0
#: How often the round loop re-reads the store while waiting (deadlines need no message to pass).
_POLL_S = 0.5


class FedAvgService:
    """Wires the update inbox, the policy, the rounds and the outbox; ``run`` returns the exit code."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        connection: AbstractRobustConnection,
        rounds: FedAvgRounds,
        outbox: RoundOutbox,
        expect: UpdateExpectations,
        metrics: CloudMetrics,
    ):
        self.settings = settings
        self.connection = connection
        self.rounds = rounds
        self.outbox = outbox
        self.expect = expect
        self.metrics = metrics
        self.policy = FedAvgPolicy(settings.rounds, expect.expected, settings.min_edges, settings.round_deadline_s)
        self.status = "starting"
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()

    def request_stop(self) -> None:
        """SIGTERM: stop taking work, stop evaluating at the next batch, exit once the state is safe."""
        if not self._stop.is_set():
            log.info("stop requested", extra={"job": self.settings.job})
        self._stop.set()
        self.rounds.stop.set()

    def health(self) -> tuple[bool, str]:
        ok = not self.connection.is_closed
        return ok, f"{'ok' if ok else 'broker connection closed'}: {self.status}\n"

    async def run(self) -> int:
        """Serve until every round is done (0), or until stopped (0, after a safe shutdown)."""
        consumers: list[tuple[AbstractQueue, str]] = []
        channels: list[AbstractChannel] = []
        try:
            await retry_while_queues_recover(lambda: self._subscribe(channels, consumers), what="fedavg subscriptions")
            if await self._until_stopped(self.outbox.publish_pending()):
                await self._round_loop()
        except TrainingInterruptedError as exc:
            log.info("round abandoned; the last completed round stands", extra={"detail": str(exc)})
        finally:
            self._stop.set()
            self.rounds.stop.set()
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
        """Declare the job's queues, the events stream and each edge's control queue; consume the inbox."""
        await close_all(channels)
        consumers.clear()
        s = self.settings
        policy = QueuePolicy(delivery_limit=s.delivery_limit)
        channel = await self.connection.channel()
        channels.append(channel)
        await channel.set_qos(prefetch_count=s.prefetch)
        inbox = await declare_job_queues(channel, s.job, policy)
        await declare_events_stream(channel, policy)
        for edge in sorted(self.expect.expected):
            await declare_control_queue(channel, s.job, edge)
        consumers.append((inbox, await inbox.consume(self._on_message)))

    async def _round_loop(self) -> None:
        round_no = await asyncio.to_thread(self.rounds.last_completed) + 1
        while round_no <= self.settings.rounds and not self._stop.is_set():
            start = await self.rounds.open(round_no)
            decision = await self._await_quorum(start)
            if decision is None:
                return
            self.status = f"aggregating round {round_no}"
            completed = await self.rounds.complete(start, decision)
            self._observe(completed.event)
            if not await self._until_stopped(self.outbox.publish(completed)):
                return
            round_no += 1
        if round_no > self.settings.rounds:
            self.status = "job completed"
            if await self._until_stopped(self.outbox.finish_job()):
                await self._until_stopped(self.rounds.send_stop())

    async def _await_quorum(self, start: RoundStart) -> Aggregate | None:
        """The policy's decision to aggregate ``start``'s round; None when stopped first."""
        last_reason = ""
        while not self._stop.is_set():
            reported = await asyncio.to_thread(self.rounds.parts.updates.reported, start.round)
            if start.closed_at is not None:  # closed before a restart: aggregate what was stored then
                return Aggregate(start.round, sample_weights(reported), "round was closed before a restart")
            view = RoundView(start.round, reported, time.time() - start.started_at)
            decision = decide(self.policy, view)
            if isinstance(decision, Aggregate):
                return decision
            if decision.reason != last_reason:
                log.info("waiting for updates", extra={"round": start.round, "reason": decision.reason})
                last_reason = decision.reason
            self.status = f"round {start.round}: {decision.reason}"
            await self._wait_for_change(_POLL_S)
        return None

    async def _wait_for_change(self, timeout_s: float) -> None:
        waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        self._changed.clear()

    async def _until_stopped(self, work: Coroutine[Any, Any, Any]) -> bool:
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

    def _observe(self, event: dict[str, Any]) -> None:
        m = self.metrics
        m.round_duration.observe(float(event["duration_s"]))
        m.last_round.set(int(event["round"]))
        m.last_round_time.set(float(event["finished_at"]))
        for part in ("box", "obj", "cls"):
            m.loss.labels(part).set(float(event["losses"][part]))
        if event.get("public_val"):
            m.map50.labels("public").set(float(event["public_val"]["map50"]))

    # --- deliveries --------------------------------------------------------------------------------

    def _retry(self, context: dict[str, Any]) -> TransientRetry:
        def on_retry(exc: BaseException, pause: float) -> None:
            self.metrics.batches.labels("retried").inc()
            log.warning(
                "transient ingest failure; retrying",
                extra={**context, "retry_in_s": round(pause, 2), "error": f"{type(exc).__name__}: {exc}"},
            )

        return TransientRetry(self.settings.ingest_retry_s, self._stop, on_retry)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
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
        if delivery.type != UPDATE_TYPE:
            detail = f"a fedavg job takes only {UPDATE_TYPE} messages, not {delivery.type!r}"
            outcome: UpdateOutcome = Rejected(Reason.INVALID_FIELD, detail)
        else:
            try:
                parts = self.rounds.parts
                outcome = await self._retry(context).run(
                    lambda: ingest_update(delivery, self.expect, parts.blobs, parts.updates)
                )
            except RequeueError as exc:
                self.metrics.batches.labels("requeued").inc()
                log.warning("transient ingest failure persists; requeueing", extra={**context, "error": str(exc)})
                raise
        self._account(outcome, delivery, context)
        if isinstance(outcome, Rejected):
            await self.rounds.parts.publisher.publish(dead_letter(delivery, self.settings.job, outcome))

    def _account(self, outcome: UpdateOutcome, delivery: Delivery, context: dict[str, Any]) -> None:
        m = self.metrics
        if isinstance(outcome, Rejected):
            m.batches.labels("dead").inc()
            log.warning("message refused", extra={**context, "reason": outcome.reason.value, "detail": outcome.detail})
        elif isinstance(outcome, Duplicate):
            m.batches.labels("duplicate").inc()
            log.info("duplicate update acknowledged", extra={**context, "edge": outcome.edge})
        elif isinstance(outcome, Straggler):
            m.batches.labels("straggler").inc()
            log.warning(
                "late update discarded: its round closed before it arrived",
                extra={**context, "edge": outcome.edge, "round": outcome.round},
            )
        elif isinstance(outcome, StoredUpdateOutcome):
            m.batches.labels("stored").inc()
            m.received_bytes.inc(outcome.wire_bytes)
            m.s3_get.observe(outcome.fetch_s)
            if delivery.timestamp:
                m.ingest_lag.observe(max(time.time() - delivery.timestamp, 0.0))
            log.info("update stored", extra={**context, "edge": outcome.edge, "round": outcome.round})
            self._changed.set()

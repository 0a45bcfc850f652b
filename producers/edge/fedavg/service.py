"""The edge daemon in FedAvg mode: read ``mistnet.<job>.control.<edge>``, train each round, send the update.

One control message at a time (prefetch 1). A ``start-round`` is acknowledged only after its update
was confirmed by the broker, or after the round was deliberately left out (already done, superseded by
a newer control message waiting behind it, or impossible: a bad reference, a wrong model, no images).
A SIGTERM mid-round leaves the message unacknowledged, so it comes back after a restart; an update
computed but not yet confirmed is re-sent from the outbox instead of being trained again. ``stop``
ends the daemon with ``once``; otherwise it keeps waiting for the next job's rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
import torch
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from producers.edge.fedavg.inbox import ControlInbox
from producers.edge.fedavg.local import compute_update, train_samples, update_message
from producers.edge.fedavg.outbox import UpdateOutbox, UpdateRecord
from producers.edge.ledger import Ledger
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.blob.store import BlobMissingError, BlobStore, BlobTooLargeError
from shared.config.edge import EdgeSettings
from shared.dataset.sources import DatasetError
from shared.training.full import TrainingStoppedError
from shared.wire import names
from shared.wire.control import StartRound, StopJob, decode_control
from shared.wire.features import CONTENT_TYPE, BlobRef, Reason, WireError, sha256_hex
from shared.wire.update import UPDATE_TYPE, encode_update

log = logging.getLogger(__name__)
_QUEUE_RETRY_MAX_S = 10.0


@dataclass(frozen=True)
class FedAvgEdgeClients:
    """What the composition root builds and the service only uses."""

    connection: AbstractRobustConnection
    publisher: ConfirmedPublisher
    blob: BlobStore
    ledger: Ledger
    outbox: UpdateOutbox


class FedAvgEdgeService:
    """Trains the rounds the cloud starts on this edge's own train images; never releases features."""

    def __init__(self, settings: EdgeSettings, clients: FedAvgEdgeClients, *, device: torch.device):
        self._s = settings
        self._c = clients
        self._device = device
        self._queue_name = names.control_queue(settings.job, settings.edge)
        self.status = "starting"
        self.last_error: str | None = None

    def _extra(self, **fields: Any) -> dict[str, Any]:
        return {"job": self._s.job, "edge": self._s.edge, **fields}

    def health(self) -> tuple[bool, str]:
        return (self.last_error is None, self.last_error or f"ok: {self.status}")

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``, or with ``once`` until the cloud's ``stop``; raises on a fatal error."""
        try:
            await self._run(stop)
        except Exception as exc:
            self.last_error = str(exc)
            raise

    async def _run(self, stop: asyncio.Event) -> None:
        found = await self._control_queue(stop)
        if found is None:
            return
        channel, queue = found
        inbox = ControlInbox()
        tag = await queue.consume(inbox.put)
        self.status = "waiting for the cloud's start-round"
        try:
            while not stop.is_set():
                message = await inbox.next(stop)
                if message is None or await self._handle(message, inbox, stop):
                    return
        finally:
            if not channel.is_closed:
                await queue.cancel(tag)
                await channel.close()  # unacknowledged messages go back to the queue

    async def _control_queue(self, stop: asyncio.Event) -> tuple[AbstractChannel, AbstractQueue] | None:
        """The control queue once it exists (provisioning or the cloud declares it; the edge may not)."""
        delay = 0.5
        while not stop.is_set():
            channel = await self._c.connection.channel()
            try:
                queue = await channel.declare_queue(self._queue_name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                log.info("control queue does not exist yet; waiting for the cloud", extra=self._extra(retry_s=delay))
                self.status = f"waiting for the control queue {self._queue_name}"
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, _QUEUE_RETRY_MAX_S)
                continue
            # Two at a time: while one round is handled, the next control message (if any) shows whether
            # the cloud has moved on already (a later round or stop), so a stale round is not trained.
            await channel.set_qos(prefetch_count=2)
            return channel, queue
        return None

    async def _handle(self, message: AbstractIncomingMessage, inbox: ControlInbox, stop: asyncio.Event) -> bool:
        """Handle one control message; True when the daemon should exit (``stop`` with ``once``)."""
        try:
            control = decode_control(message.body, message.content_type, message.type)
        except WireError as exc:
            log.error("refusing a malformed control message: %s", exc, extra=self._extra(message_id=message.message_id))
            await message.reject(requeue=False)
            return False
        if control.job != self._s.job:
            log.warning("control message of another job ignored", extra=self._extra(other_job=control.job))
            await _ack(message)
            return False
        if isinstance(control, StopJob):
            log.info("the cloud stopped the job", extra=self._extra(rounds=control.rounds, reason=control.reason))
            await _ack(message)
            self.status = "job stopped by the cloud"
            return self._s.once
        outcome = await self._round(control, len(message.body), inbox, stop)
        if outcome is not None:
            await _ack(message)
            log.info("start-round handled", extra=self._extra(round=control.round, outcome=outcome))
        return False

    async def _round(
        self, start: StartRound, control_bytes: int, inbox: ControlInbox, stop: asyncio.Event
    ) -> str | None:
        """The round's outcome once settled; None when stopped before (the message is then redelivered)."""
        s, outbox = self._s, self._c.outbox
        known = await asyncio.to_thread(outbox.get, s.job, start.round)
        if known is not None and known.state != "pending":
            return f"already {known.state}"
        record = known.record if known is not None else None
        if record is None:
            if inbox.moved_on(start):
                return "superseded: a later round or stop is waiting"  # the round closed without us
            try:
                record = await self._compute(start, control_bytes, stop)
            except (WireError, BlobMissingError, DatasetError, ValueError) as exc:
                log.error("round %s abandoned: %s", start.round, exc, extra=self._extra(round=start.round))
                await asyncio.to_thread(outbox.abandon, s.job, start.round, str(exc)[:500])
                return "abandoned"
            if record is None:
                return None
        await self._send(record)
        return "confirmed"

    async def _compute(self, start: StartRound, control_bytes: int, stop: asyncio.Event) -> UpdateRecord | None:
        s = self._s
        self.status = f"round {start.round}: downloading the global model"
        started = time.perf_counter()
        global_bytes = await self._download(start.model)
        download_s = time.perf_counter() - started
        samples = await asyncio.to_thread(train_samples, s.data, self._c.ledger, s.val_fraction)
        self.status = f"round {start.round}: training on {len(samples)} images"
        log.info("round started", extra=self._extra(round=start.round, images=len(samples), epochs=start.epochs))
        halt = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(
                compute_update,
                start,
                global_bytes,
                samples,
                edge=s.edge,
                device=self._device,
                stop=halt,
                workers=s.workers,
            )
        )
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if stop.is_set():
            halt.set()
            with contextlib.suppress(TrainingStoppedError):
                await work
            log.info("round interrupted; it is trained again after a restart", extra=self._extra(round=start.round))
            return None
        local = work.result()
        digest = sha256_hex(local.payload)
        key = names.update_object_key(s.job, s.edge, start.round, digest)
        message = update_message(
            start,
            local,
            edge=s.edge,
            ref=BlobRef(uri=self._c.blob.uri(key), size=len(local.payload), sha256=digest),
            download_bytes=len(global_bytes) + control_bytes,
            download_s=download_s,
        )
        record = UpdateRecord(
            s.job,
            start.round,
            names.update_message_id(s.job, s.edge, start.round),
            encode_update(message),
            local.payload,
            key,
            local.samples,
        )
        await asyncio.to_thread(self._c.outbox.persist, record)
        log.info(
            "update computed",
            extra=self._extra(
                round=start.round, samples=local.samples, train_s=round(local.train_s, 2), bytes=len(local.payload)
            ),
        )
        return record

    async def _download(self, ref: BlobRef) -> bytes:
        """The global model: from our bucket, under the job's global prefix, size-limited, sha256 verified."""
        s = self._s
        prefix = names.global_model_prefix(s.job)
        if ref.bucket != self._c.blob.bucket or not ref.key.startswith(prefix):
            raise WireError(
                Reason.REF_OUTSIDE_PREFIX, f"global model {ref.uri} is not under s3://{self._c.blob.bucket}/{prefix}"
            )
        if ref.size > s.max_model_bytes:
            raise WireError(
                Reason.OVERSIZE, f"global model of {ref.size} bytes exceeds max_model_bytes={s.max_model_bytes}"
            )
        try:
            data = await self._c.blob.get(ref.key, max_bytes=ref.size)
        except BlobTooLargeError as exc:
            raise WireError(Reason.OVERSIZE, str(exc)) from None
        if sha256_hex(data) != ref.sha256 or len(data) != ref.size:
            raise WireError(Reason.SHA256_MISMATCH, f"global model {ref.uri} does not match its size and sha256")
        return data

    async def _send(self, record: UpdateRecord) -> None:
        """Upload the update, then publish its message with confirm, then mark it confirmed."""
        s = self._s
        await self._c.blob.put(record.object_key, record.payload)
        await self._c.publisher.publish(
            OutgoingMessage(
                names.FEATURES_EXCHANGE,
                names.features_routing_key(s.job, s.edge),
                record.body,
                message_id=record.message_id,
                content_type=CONTENT_TYPE,
                type=UPDATE_TYPE,
                user_id=s.broker_user,
            )
        )
        await asyncio.to_thread(self._c.outbox.mark_confirmed, s.job, record.round)
        self.status = f"round {record.round}: update confirmed"
        log.info("update confirmed", extra=self._extra(round=record.round, bytes=record.wire_bytes))


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _ack(message: AbstractIncomingMessage) -> None:
    """Acknowledge; after a reconnect the delivery is gone and the broker redelivers it (handled idempotently)."""
    try:
        await message.ack()
    except (aio_pika.exceptions.AMQPError, RuntimeError) as exc:
        log.warning("could not acknowledge a control message; it will be redelivered", extra={"error": repr(exc)})

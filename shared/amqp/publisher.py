"""Publishing with confirms: persistent, ``mandatory``, every publish awaited with a timeout and retried.

A message counts as sent only once the broker confirmed it. Retries reuse the message id, so the
consumer recognises the duplicate a lost confirm can cause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection, DeliveryMode, FieldValue

log = logging.getLogger(__name__)

# Errors after which the same publish may succeed: connection loss, timeout, unroutable (no queue yet).
_TRANSIENT = (
    asyncio.TimeoutError,
    ConnectionError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aio_pika.exceptions.ChannelClosed,
    aio_pika.exceptions.DeliveryError,
    aio_pika.exceptions.PublishError,
)


class NotConfirmedError(RuntimeError):
    """The broker did not confirm a message after every retry."""


@dataclass(frozen=True)
class OutgoingMessage:
    """What to publish; AMQP properties follow DESIGN §4."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    content_type: str
    type: str
    user_id: str | None = None
    headers: dict[str, FieldValue] | None = None


class ConfirmedPublisher:
    """One confirm-mode channel; ``publish`` returns once the broker has the message durably."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        confirm_timeout_s: float = 30.0,
        attempts: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
    ):
        self._connection = connection
        self._timeout = confirm_timeout_s
        self._attempts = attempts
        self._backoff = backoff_s
        self._max_backoff = max_backoff_s
        self._channel: AbstractChannel | None = None
        self.last_confirm_s = 0.0

    async def _ready_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            try:
                self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            except RuntimeError as exc:  # aio-pika's "Connection was not opened" while the robust one reconnects
                raise ConnectionError(f"the broker connection is being re-established ({exc})") from exc
        return self._channel

    async def publish(self, msg: OutgoingMessage) -> None:
        """Publish ``msg`` and wait for its confirm; raises :class:`NotConfirmedError` after the retries."""
        message = aio_pika.Message(
            msg.body,
            content_type=msg.content_type,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=msg.message_id,
            type=msg.type,
            user_id=msg.user_id,
            headers=msg.headers or {},
            timestamp=time.time(),
        )
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                channel = await self._ready_channel()
                exchange = await channel.get_exchange(msg.exchange, ensure=False)
                started = time.perf_counter()
                await exchange.publish(message, msg.routing_key, mandatory=True, timeout=self._timeout)
                self.last_confirm_s = time.perf_counter() - started
                return
            except _TRANSIENT as exc:
                log.warning(
                    "publish not confirmed, retrying",
                    extra={
                        "message_id": msg.message_id,
                        "routing_key": msg.routing_key,
                        "attempt": attempt,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                self._channel = None if isinstance(exc, aio_pika.exceptions.ChannelClosed) else self._channel
                if attempt == self._attempts:
                    raise NotConfirmedError(
                        f"message {msg.message_id} to {msg.exchange}/{msg.routing_key} was not confirmed "
                        f"after {self._attempts} attempts ({type(exc).__name__}: {exc})"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

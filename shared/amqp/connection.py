"""Connecting to RabbitMQ: TLS options, bounded retries with back-off at start, robust reconnects after."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from shared.config.base import CommonSettings, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")


class BrokerUnavailableError(ConnectionError):
    """The broker could not be reached or refused our credentials."""


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to connect; ``url`` may hold a password and is never logged as is."""

    url: str
    name: str = "mistnet"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    connect_attempts: int = 5
    connect_backoff_s: float = 0.5
    heartbeat_s: int = 30

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS context for amqps:// (CA bundle and optional client certificate)."""
        if not self.url.startswith("amqps://"):
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.cert_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return context


def broker_config(settings: CommonSettings, name: str) -> BrokerConfig:
    """A daemon's broker connection as its settings describe it (URL, TLS files, tries at start)."""
    return BrokerConfig(
        settings.amqp_url.get_secret_value(),
        name=name,
        ca_file=settings.amqp_ca_file,
        cert_file=settings.amqp_cert_file,
        key_file=settings.amqp_key_file,
        connect_attempts=settings.connect_attempts,
    )


async def connect(config: BrokerConfig) -> AbstractRobustConnection:
    """Open a robust connection, retrying with exponential back-off a bounded number of times.

    After the first success aio-pika reconnects by itself; a failure at start is reported as
    :class:`BrokerUnavailableError` naming the (redacted) URL.
    """
    delay = config.connect_backoff_s
    last: Exception | None = None
    separator = "&" if "?" in config.url else "?"
    url = f"{config.url}{separator}heartbeat={config.heartbeat_s}"
    for attempt in range(1, config.connect_attempts + 1):
        try:
            return await aio_pika.connect_robust(
                url,
                ssl_context=config.ssl_context(),
                client_properties={"connection_name": config.name},
                timeout=10,
            )
        except (TimeoutError, OSError, ConnectionError, aio_pika.exceptions.AMQPError) as exc:
            last = exc
            log.warning(
                "broker connection failed",
                extra={"url": redact_url(config.url), "attempt": attempt, "error": repr(exc)},
            )
            if attempt < config.connect_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
    raise BrokerUnavailableError(
        f"cannot connect to RabbitMQ at {redact_url(config.url)} after {config.connect_attempts} attempts "
        f"({type(last).__name__}: {last}); is it running and are the credentials right?"
    )


def is_queue_recovering(error: BaseException) -> bool:
    """True for the broker's "home node of durable queue ... is down or inaccessible": a queue (a stream
    or a quorum queue) that is not serving yet just after the broker (re)started; it passes by itself."""
    return isinstance(error, aio_pika.exceptions.ChannelNotFoundEntity) and "down or inaccessible" in str(error)


async def retry_while_queues_recover(
    setup: Callable[[], Awaitable[T]], *, what: str, timeout_s: float = 120.0, backoff_s: float = 0.5
) -> T:
    """Run ``setup`` (which opens its own channels: a refused declare closes its channel) again while
    the broker reports a queue as still recovering, with back-off, for up to ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    delay = backoff_s
    while True:
        try:
            return await setup()
        except aio_pika.exceptions.ChannelNotFoundEntity as exc:
            if not is_queue_recovering(exc) or asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning(
                "a queue is not serving yet; retrying", extra={"what": what, "retry_in_s": delay, "error": str(exc)}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def close_all(channels: list[AbstractChannel]) -> None:
    """Close the channels still open and empty the list."""
    for channel in channels:
        if not channel.is_closed:
            await channel.close()
    channels.clear()

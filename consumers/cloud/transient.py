"""Transient ingest failures (S3, local disk) are retried in process before a delivery is requeued.

Every requeue counts toward the quorum queue's delivery limit, past which the broker dead-letters the
message, valid or not. So a delivery whose ingest fails for a transient reason is held (unacknowledged)
and retried here with capped exponential back-off for up to ``ingest_retry_s``; only after that, or when
the daemon is stopping, does it go back to the queue. An S3 outage shorter than that costs no delivery.
Keep ``ingest_retry_s`` well under the broker's consumer timeout (30 minutes by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.blob.store import BlobError

T = TypeVar("T")

#: Failures that pass by themselves: the S3 server or the local disk, not the message.
TRANSIENT: tuple[type[BaseException], ...] = (BlobError, OSError, sqlite3.Error)


class RequeueError(Exception):
    """Retrying in process is over (time spent or stopping): the delivery goes back to the queue."""


class TransientRetry:
    """Runs one ingest, retrying :data:`TRANSIENT` failures until it succeeds, ``budget_s`` passes or ``stop``."""

    def __init__(
        self,
        budget_s: float,
        stop: asyncio.Event,
        on_retry: Callable[[BaseException, float], None],
        *,
        first_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
    ):
        self.budget_s, self.stop, self.on_retry = budget_s, stop, on_retry
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s

    async def run(self, attempt: Callable[[], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget_s
        delay = self.first_delay_s
        while True:
            try:
                return await attempt()
            except TRANSIENT as exc:
                remaining = deadline - loop.time()
                if self.stop.is_set() or remaining <= 0:
                    raise RequeueError(f"{type(exc).__name__}: {exc}") from exc
                pause = min(delay, remaining)
                self.on_retry(exc, pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=pause)
                delay = min(delay * 2, self.max_delay_s)

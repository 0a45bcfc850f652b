"""An edge's control deliveries in arrival order, with a look at what waits behind the one in hand."""

from __future__ import annotations

import asyncio
from collections import deque

from aio_pika.abc import AbstractIncomingMessage

from shared.wire.control import StartRound, StopJob, decode_control
from shared.wire.features import WireError


class ControlInbox:
    """Control deliveries in arrival order, with a look at what waits behind the one in hand."""

    def __init__(self) -> None:
        self._waiting: deque[AbstractIncomingMessage] = deque()
        self._arrived = asyncio.Event()

    async def put(self, message: AbstractIncomingMessage) -> None:
        self._waiting.append(message)
        self._arrived.set()

    async def next(self, stop: asyncio.Event) -> AbstractIncomingMessage | None:
        """The next delivery, or None once ``stop`` is set."""
        while not self._waiting:
            self._arrived.clear()
            arrived = asyncio.ensure_future(self._arrived.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({arrived, stopped}, return_when=asyncio.FIRST_COMPLETED)
            arrived.cancel()
            stopped.cancel()
            if stop.is_set():
                return None
        return self._waiting.popleft()

    def moved_on(self, start: StartRound) -> bool:
        """Whether a ``stop`` or a later round of the same job waits: ``start``'s round has closed then."""
        for message in self._waiting:
            try:
                control = decode_control(message.body, message.content_type, message.type)
            except WireError:
                continue
            if control.job == start.job and (isinstance(control, StopJob) or control.round > start.round):
                return True
        return False

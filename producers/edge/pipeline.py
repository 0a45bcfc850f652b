"""Two threads off the event loop: one iterates a source (decode + extract), one transforms (encode).

Extraction (torch) and randomise/pack/encode (numpy, which releases the GIL) overlap, joined by a
one-slot queue; results reach the event loop in order through ``depth`` slots. Every hand-off is
bounded, so memory stays flat, and every wait checks the stop flag, so a stop never blocks a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

A = TypeVar("A")
B = TypeVar("B")
_WAIT_S = 0.1


def _close(iterator: Iterator[object]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


@dataclass(frozen=True)
class _End:
    error: BaseException | None = None


class StagedPipeline(Generic[A, B]):
    """``source`` iterated in one thread, ``transform`` (0..n results per item) in a second; awaited in order."""

    def __init__(
        self,
        source: Iterator[A],
        transform: Callable[[A], Iterable[B]],
        *,
        stopping: threading.Event | None = None,
        depth: int = 1,
    ):
        """``stopping`` is shared with ``source`` when it should check it between items too."""
        self._source = source
        self._transform = transform
        self._handoff: queue.Queue[A | _End] = queue.Queue(maxsize=1)
        self._slots = threading.Semaphore(depth)
        self._out: asyncio.Queue[B | _End] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = stopping if stopping is not None else threading.Event()
        self._threads = [
            threading.Thread(target=self._run_source, name="edge-extract", daemon=True),
            threading.Thread(target=self._run_transform, name="edge-encode", daemon=True),
        ]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for thread in self._threads:
            thread.start()

    async def next(self) -> B | None:
        """The next result, None at the end; re-raises a stage's exception."""
        item = await self._out.get()
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            return None
        self._slots.release()
        return item

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop both threads at their next hand-off and wait for them (they abandon what they hold)."""
        self.stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                await asyncio.to_thread(thread.join, timeout_s)

    def _put(self, item: A | _End) -> bool:
        while not self.stopping.is_set():
            with contextlib.suppress(queue.Full):
                self._handoff.put(item, timeout=_WAIT_S)
                return True
        return False

    def _emit(self, item: B | _End) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(self._out.put_nowait, item)

    def _run_source(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    break
            else:
                self._put(_End())
        except Exception as exc:
            self._put(_End(exc))
        finally:
            _close(self._source)

    def _run_transform(self) -> None:
        while not self.stopping.is_set():
            try:
                item = self._handoff.get(timeout=_WAIT_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                self._emit(item)
                return
            try:
                results = list(self._transform(item))
            except Exception as exc:
                self.stopping.set()
                self._emit(_End(exc))
                return
            for result in results:
                while not self._slots.acquire(timeout=_WAIT_S):
                    if self.stopping.is_set():
                        return
                self._emit(result)

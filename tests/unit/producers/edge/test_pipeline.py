"""Tests of producers.edge.pipeline: threaded stages in order, errors surfaced, stops prompt."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from producers.edge.pipeline import StagedPipeline
from shared.dataset.sources import DatasetError


def numbers(count: int, fail_at: int | None = None, delay_s: float = 0.0) -> Iterator[int]:
    for i in range(count):
        if i == fail_at:
            raise DatasetError(f"item {i} is bad")
        time.sleep(delay_s)
        yield i


class TestStagedPipeline:
    """Results arrive in order; a stage's error reaches the awaiting side; close() never hangs."""

    async def test_order(self) -> None:
        pipeline = StagedPipeline(numbers(20), lambda x: [x * 10] * (x % 3), depth=2)
        pipeline.start()
        got = []
        while (item := await pipeline.next()) is not None:
            got.append(item)
        await pipeline.close()
        assert got == [i * 10 for i in range(20) for _ in range(i % 3)]  # 0..2 results an item

    async def test_source_error(self) -> None:
        pipeline = StagedPipeline(numbers(5, fail_at=3), lambda x: [x])
        pipeline.start()
        got = [await pipeline.next() for _ in range(3)]
        with pytest.raises(DatasetError, match="item 3 is bad"):
            await pipeline.next()
        await pipeline.close()
        assert got == [0, 1, 2]

    async def test_transform_error(self) -> None:
        def boom(x: int) -> list[int]:
            if x == 1:
                raise ValueError("cannot encode")
            return [x]

        pipeline = StagedPipeline(numbers(5), boom)
        pipeline.start()
        assert await pipeline.next() == 0
        with pytest.raises(ValueError, match="cannot encode"):
            await pipeline.next()
        await pipeline.close()

    async def test_close_with_full_queues(self) -> None:
        """Nobody consumes: both threads sit on full hand-offs, and still stop at once."""
        pipeline = StagedPipeline(numbers(1000), lambda x: [x])
        pipeline.start()
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        await pipeline.close(timeout_s=5)
        assert time.perf_counter() - started < 1.0
        assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("edge-"))

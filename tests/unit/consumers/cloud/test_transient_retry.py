"""Transient ingest failures are retried in process (no delivery spent) until success, the budget, or a stop."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from consumers.cloud.transient import RequeueError, TransientRetry
from shared.blob.store import BlobError


class Failing:
    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "stored"


def run(retry_budget_s: float, attempt: Failing, stop: asyncio.Event | None = None) -> tuple[str, list[float]]:
    pauses: list[float] = []

    async def main() -> str:
        retry = TransientRetry(
            retry_budget_s, stop or asyncio.Event(), lambda _exc, pause: pauses.append(pause), first_delay_s=0.01
        )
        return await retry.run(attempt)

    return asyncio.run(main()), pauses


@pytest.mark.parametrize("error", [BlobError("s3 down"), OSError("disk full"), sqlite3.OperationalError("locked")])
def test_transient_failures_are_retried_until_they_pass(error: Exception) -> None:
    attempt = Failing(3, error)
    result, pauses = run(10, attempt)
    assert (result, attempt.calls) == ("stored", 4)
    assert pauses == pytest.approx([0.01, 0.02, 0.04])  # exponential back-off


def test_other_errors_are_not_retried() -> None:
    attempt = Failing(1, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        run(10, attempt)
    assert attempt.calls == 1


def test_the_delivery_is_requeued_once_the_budget_is_spent() -> None:
    attempt = Failing(10_000, BlobError("s3 down"))
    with pytest.raises(RequeueError, match="s3 down"):
        run(0.3, attempt)
    assert 3 <= attempt.calls < 100


def test_zero_budget_requeues_at_once() -> None:
    attempt = Failing(1, BlobError("s3 down"))
    with pytest.raises(RequeueError):
        run(0, attempt)
    assert attempt.calls == 1


def test_a_stop_ends_the_wait_at_once() -> None:
    async def main() -> float:
        stop = asyncio.Event()
        retry = TransientRetry(600, stop, lambda _exc, _pause: None, first_delay_s=30)
        task = asyncio.create_task(retry.run(Failing(10_000, BlobError("s3 down"))))
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        stop.set()
        with pytest.raises(RequeueError):
            await task
        return asyncio.get_running_loop().time() - started

    assert asyncio.run(main()) < 1.0

"""Subscribing right after a broker restart: a queue that is still recovering is waited for, nothing else is."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from shared.amqp.connection import is_queue_recovering, retry_while_queues_recover

RECOVERING = (
    "NOT_FOUND - home node 'rabbit@host' of durable queue 'mistnet.events.history' in vhost '/' is down or inaccessible"
)
MISSING = "NOT_FOUND - no queue 'mistnet.job.features' in vhost '/'"


class Flaky:
    def __init__(self, failures: int, message: str = RECOVERING):
        self.failures, self.message, self.calls = failures, message, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ChannelNotFoundEntity(self.message)
        return "subscribed"


def test_recovering_is_told_apart_from_missing() -> None:
    assert is_queue_recovering(ChannelNotFoundEntity(RECOVERING))
    assert not is_queue_recovering(ChannelNotFoundEntity(MISSING))
    assert not is_queue_recovering(RuntimeError(RECOVERING))


def test_setup_is_retried_until_the_queue_serves() -> None:
    setup = Flaky(failures=3)
    result = asyncio.run(retry_while_queues_recover(setup, what="test", backoff_s=0.01))
    assert (result, setup.calls) == ("subscribed", 4)


def test_a_missing_queue_is_not_retried() -> None:
    setup = Flaky(failures=1, message=MISSING)
    with pytest.raises(ChannelNotFoundEntity, match="no queue"):
        asyncio.run(retry_while_queues_recover(setup, what="test", backoff_s=0.01))
    assert setup.calls == 1


def test_gives_up_after_the_timeout() -> None:
    setup = Flaky(failures=1000)
    with pytest.raises(ChannelNotFoundEntity, match="down or inaccessible"):
        asyncio.run(retry_while_queues_recover(setup, what="test", timeout_s=0.2, backoff_s=0.02))
    assert 2 <= setup.calls < 1000

"""``mistnet monitor`` against the real broker, as the read-only monitor user: live JSON lines and history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.provision import Credentials
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.amqp.topology import QueuePolicy, declare_events_stream
from shared.wire import names
from shared.wire.events import JSON_CONTENT_TYPE
from tests.events_factory import edge_done, job_completed, round_completed
from tests.integration.conftest import Broker


async def _publish(broker: Broker, cred: Credentials, *events: Any) -> None:
    """Publish ``events`` as ``cred`` with its user_id, confirmed, in order."""
    connection = await connect(BrokerConfig(broker.url(cred)))
    async with connection:
        publisher = ConfirmedPublisher(connection, attempts=1)
        for event in events:
            await publisher.publish(
                OutgoingMessage(
                    names.EVENTS_EXCHANGE,
                    names.event_routing_key(event.job, event.type),
                    event.to_json(),
                    message_id=event.id,
                    content_type=JSON_CONTENT_TYPE,
                    type=event.type,
                    user_id=cred.user,
                )
            )


async def _declare_stream(broker: Broker) -> None:
    admin = await connect(BrokerConfig(broker.url()))
    async with admin:
        await declare_events_stream(await admin.channel(), QueuePolicy())


@contextmanager
def _monitor(broker: Broker, *args: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "MISTNET_AMQP_URL": broker.url(broker.monitor)}
    env.pop("MISTNET_JOB", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mistnet.cli", "monitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _wait_ready(process: subprocess.Popen[str]) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if line.startswith("monitor: watching"):
            return
        if not line and process.poll() is not None:
            pytest.fail(f"monitor exited with {process.returncode} before subscribing")
    pytest.fail("monitor did not subscribe within 30 s")


def _json_lines(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return [json.loads(line) for line in out.splitlines()]


class TestLiveMonitor:
    """Subscribed live, --json prints the job's events one per line, other jobs' not, and --until-done exits."""

    async def test_live_json_lines(self, broker: Broker) -> None:
        await _declare_stream(broker)
        with _monitor(broker, "--job", broker.job, "--json", "--until-done") as process:
            _wait_ready(process)
            first = round_completed(broker.job, 1)
            await _publish(broker, broker.cloud, first, round_completed("otherjob", 1))
            await _publish(broker, broker.edges["edge-a"], edge_done(broker.job, "edge-a"))
            await _publish(broker, broker.cloud, job_completed(broker.job))
            lines = _json_lines(process)
        assert [(e["type"], e["job"]) for e in lines] == [
            ("round.completed", broker.job),
            ("edge.done", broker.job),
            ("job.completed", broker.job),
        ]
        assert lines[0] == json.loads(first.to_json())
        remaining = [q["name"] for q in broker.api.queues(broker.vhost) if q["name"].startswith("mistnet.monitor.")]
        assert remaining == [], "the monitor's own queue must go away with it"


class TestHistory:
    """--history replays events published before the monitor started, in order, for its job only."""

    async def test_replay_from_stream(self, broker: Broker) -> None:
        await _declare_stream(broker)
        await _publish(broker, broker.cloud, round_completed(broker.job, 1), round_completed("otherjob", 1))
        await _publish(broker, broker.edges["edge-b"], edge_done(broker.job, "edge-b"))
        await _publish(broker, broker.cloud, round_completed(broker.job, 2))
        with _monitor(broker, "--job", broker.job, "--json", "--history", "--max-events", "3") as process:
            lines = _json_lines(process)
        assert [(e["type"], e.get("round", e.get("edge"))) for e in lines] == [
            ("round.completed", 1),
            ("edge.done", "edge-b"),
            ("round.completed", 2),
        ]

    async def test_history_then_live_in_plain_lines(self, broker: Broker) -> None:
        await _declare_stream(broker)
        await _publish(broker, broker.cloud, round_completed(broker.job, 1))
        with _monitor(broker, "--history", "--until-done", "--job", broker.job) as process:
            _wait_ready(process)
            await _publish(broker, broker.cloud, job_completed(broker.job))
            out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2
        assert f"{broker.job} round.completed 1/3" in lines[0] and f"{broker.job} job.completed" in lines[1]

    async def test_missing_stream_is_explained(self, broker: Broker) -> None:
        with _monitor(broker, "--history", "--max-events", "1") as process:
            _, err = process.communicate(timeout=30)
        assert process.returncode == 1
        assert "mistnet.events.history" in err and "mistnet provision" in err

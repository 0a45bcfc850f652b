"""SIGKILL mid-run and restart: every image released exactly once (ledger and queue agree)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.edge import service as service_module
from producers.edge.ledger import LEDGER_FILE
from producers.edge.main import serve
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.topology import declare_exchanges
from shared.blob.s3 import S3Config
from shared.wire import names
from tests.integration.conftest import Broker
from tests.integration.edge_support import (
    Arrived,
    copy_images,
    declare_cloud_side,
    drain,
    drain_events,
    drain_features,
    edge_settings,
    ledger_rows,
)
from tests.prometheus_conventions import exposition_problems

pytestmark = pytest.mark.services

MISTNET = Path(sys.executable).with_name("mistnet")
IMAGES = 12
STALL_QUEUE = "test.stall"
STALL_AFTER = 3  # the queue takes this many messages, then nacks: the edge stalls in its publish retries


def edge_command(broker: Broker, s3: S3Config, data: Path, state: Path, weights: Path) -> list[str]:
    return [
        str(MISTNET),
        "edge",
        "--job", broker.job,
        "--edge", "edge-a",
        "--data", str(data),
        "--weights", str(weights),
        "--amqp-url", broker.edge_url("edge-a"),
        "--s3-endpoint", str(s3.endpoint_url),
        "--bucket", s3.bucket,
        "--img-size", "64",
        "--state-dir", str(state),
        "--once",
        "--inline-threshold-bytes", "0",  # every batch by reference: uploaded, then published
        "--log-format", "json",
    ]  # fmt: skip


def edge_env(s3: S3Config) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
    # Sedna's names for the S3 credentials and the seed job's names, in mixed case.
    env.update(
        {
            "ACCESS_KEY_ID": str(s3.access_key_id),
            "SECRET_ACCESS_KEY": str(s3.secret_access_key),
            "batch_size": "2",
            "Epsilon": "4",
            "MISTNET_PRIVACY": "rr-sym",
            "MISTNET_VAL_FRACTION": "0.25",
        }
    )
    return env


async def declare_stall_queue(broker: Broker) -> None:
    """In place of the cloud's inbox: a queue that refuses publishes once it holds STALL_AFTER messages."""
    connection = await connect(BrokerConfig(broker.url()))
    async with connection:
        channel = await connection.channel()
        await declare_exchanges(channel)
        queue = await channel.declare_queue(
            STALL_QUEUE, durable=True, arguments={"x-max-length": STALL_AFTER, "x-overflow": "reject-publish"}
        )
        await queue.bind(names.FEATURES_EXCHANGE, routing_key=f"{broker.job}.*")


async def delete_stall_queue(broker: Broker) -> None:
    connection = await connect(BrokerConfig(broker.url()))
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(STALL_QUEUE)


async def wait_for_stall(state: Path, running: Callable[[], bool], timeout_s: float = 60) -> tuple[int, int]:
    """Poll the ledger until STALL_AFTER batches are confirmed and more are persisted but unconfirmed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert running(), "the edge exited before stalling"
        if (state / LEDGER_FILE).exists():
            rows = dict(ledger_rows(state, "SELECT state, COUNT(*) FROM batches GROUP BY state"))
            if rows.get("confirmed", 0) >= STALL_AFTER and rows.get("pending", 0) >= 1:
                return rows["confirmed"], rows["pending"]
        await asyncio.sleep(0.1)
    raise AssertionError("the edge did not reach the stalled state in time")


async def start_edge(command: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*command, env=env, stderr=asyncio.subprocess.PIPE)


class TestKillAndRestart:
    """Killed with batches confirmed and batches persisted-but-unconfirmed, a restart re-publishes the same bytes."""

    async def test_every_image_released_exactly_once(
        self, *, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, IMAGES)
        await declare_stall_queue(broker)
        command = edge_command(broker, s3_bucket, data, state, yolov5n_pt)
        first = await start_edge(command, edge_env(s3_bucket))
        try:
            confirmed, pending = await wait_for_stall(state, lambda: first.returncode is None)
        finally:
            first.kill()  # SIGKILL: no chance to clean up
            await first.communicate()
        assert confirmed < IMAGES // 2  # killed mid-run
        spooled = dict(ledger_rows(state, "SELECT seq, body FROM batches WHERE state = 'pending'"))

        before = await drain(broker, STALL_QUEUE)
        await delete_stall_queue(broker)
        await declare_cloud_side(broker)
        second = await start_edge(command, edge_env(s3_bucket))
        _, stderr = await asyncio.wait_for(second.communicate(), 120)
        assert second.returncode == 0, stderr.decode()[-2000:]
        after = await drain_features(broker)

        # The queue: each message id carries one body; ids 0..n-1; every image once, none twice.
        bodies: dict[str, set[bytes]] = defaultdict(set)
        for message in before + after:
            assert message.message_id is not None
            bodies[message.message_id].add(message.body)
        assert all(len(b) == 1 for b in bodies.values()), "a message id was re-published with other bytes"
        batches = {mid: Arrived(next(iter(b)), mid, None, None, None, None).batch() for mid, b in bodies.items()}
        assert sorted(b.seq for b in batches.values()) == list(range(len(batches)))
        image_ids = [i for b in batches.values() for i in b.image_ids]
        assert len(image_ids) == len(set(image_ids)) == IMAGES
        # Spooled batches went out byte for byte, not re-randomised.
        for seq, body in spooled.items():
            assert bodies[names.feature_message_id(broker.job, "edge-a", seq)] == {body}

        # The ledger: each image released once, every batch confirmed, nothing spooled.
        releases = ledger_rows(state, "SELECT digest, COUNT(*) FROM releases GROUP BY digest")
        assert len(releases) == IMAGES and all(n == 1 for _, n in releases)
        assert ledger_rows(state, "SELECT COUNT(*), SUM(releases) FROM images WHERE status = 'released'") == [
            (IMAGES, IMAGES)
        ]
        assert ledger_rows(state, "SELECT state, COUNT(*), COUNT(body) FROM batches GROUP BY state") == [
            ("confirmed", len(batches), 0)
        ]
        events = await drain_events(broker)
        assert [(e["images_released"], e["batches"]) for e in events] == [(IMAGES, len(batches))]
        assert pending >= 1


class TestStop:
    """A stop while the broker refuses publishes exits 0 promptly; the outbox keeps what was not confirmed."""

    async def test_stop_while_stalled(
        self,
        *,
        broker: Broker,
        s3_bucket: S3Config,
        coco128: Path,
        yolov5n_pt: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(service_module, "STOP_GRACE_S", 0.5)
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, IMAGES)
        await declare_stall_queue(broker)
        settings = edge_settings(broker, s3_bucket, data, state, yolov5n_pt, batch_size=2, publish_attempts=20)
        stop = asyncio.Event()
        daemon = asyncio.create_task(serve(settings, stop=stop))
        await wait_for_stall(state, lambda: not daemon.done())
        started = time.monotonic()
        stop.set()
        assert await asyncio.wait_for(daemon, 30) == 0
        assert time.monotonic() - started < 5
        pending = ledger_rows(state, "SELECT COUNT(*) FROM batches WHERE state = 'pending'")[0][0]
        assert pending >= 1

        before = await drain(broker, STALL_QUEUE)
        await delete_stall_queue(broker)
        await declare_cloud_side(broker)
        assert await serve(settings) == 0
        after = await drain_features(broker)
        image_ids = [i for m in before + after for i in m.batch().image_ids]
        assert len(image_ids) == len(set(image_ids)) == IMAGES


class TestWatchAndSigterm:
    """The watching daemon serves /metrics and /healthz, and exits 0 promptly on SIGTERM."""

    async def test_metrics_and_sigterm(
        self, *, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 4)
        await declare_cloud_side(broker)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [a for a in edge_command(broker, s3_bucket, data, state, yolov5n_pt) if a != "--once"]
        command += ["--metrics-port", str(port), "--poll-interval-s", "0.5"]
        process = await start_edge(command, edge_env(s3_bucket))
        try:
            events = await wait_for_events(broker, process)
            assert events[0]["images_released"] == 4
            status, metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            assert exposition_problems(metrics) == []
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(metrics)
                for s in family.samples
            }
            images = sum(v for (name, _), v in samples.items() if name == "mistnet_edge_images_total")
            assert images == 4
            assert samples[("mistnet_edge_bytes_total", (("path", "s3"),))] > 4 * 512
            batches = sum(v for (name, _), v in samples.items() if name == "mistnet_edge_batches_total")
            assert samples[("mistnet_edge_s3_put_seconds_count", ())] == batches  # every batch by reference
            assert samples[("mistnet_edge_publish_confirm_seconds_count", ())] == batches
            assert await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz") == (200, "ok")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode == 0
            assert time.monotonic() - started < 10
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
        assert '"msg": "stopping"' in stderr.decode()


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read().decode()


async def wait_for_events(
    broker: Broker, process: asyncio.subprocess.Process, timeout_s: float = 60
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.returncode is None, "edge exited early"
        events = await drain_events(broker)
        if events:
            return events
        await asyncio.sleep(0.2)
    raise AssertionError("no edge.done in time")

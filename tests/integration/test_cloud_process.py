"""``mistnet cloud`` as a process: kill -9 mid-round and restart, and SIGTERM, on the real broker and S3."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from consumers.cloud.checkpoint import read_checkpoint
from consumers.cloud.store import FeatureStore
from shared.blob.s3 import S3Config
from tests.integration.cloud_support import (
    CUT,
    EVENTS_QUEUE,
    IMG_SIZE,
    Env,
    Released,
    SimulatedEdge,
    declare_events_queue,
    drain,
    events,
    release_images,
)
from tests.integration.conftest import Broker

pytestmark = pytest.mark.services

MISTNET = Path(sys.executable).with_name("mistnet")


@pytest.fixture(scope="module")
def released(coco128: Path, yolov5n_pt: Path) -> Released:
    return release_images(coco128, yolov5n_pt, 14)


@pytest.fixture
def env(broker: Broker, s3_bucket: S3Config, tmp_path: Path, released: Released, yolov5n_pt: Path) -> Env:
    return Env(broker, s3_bucket, tmp_path, released, yolov5n_pt)


class CloudProcess:
    """``mistnet cloud`` started with flags (secrets in its environment), JSON logs read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.logs: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, env: Env, store: Path, **flags: object) -> CloudProcess:
        broker, s3 = env.broker, env.s3
        args = {
            "job": broker.job,
            "blob-store": "s3",
            "s3-endpoint": s3.endpoint_url,
            "bucket": s3.bucket,
            "weights": env.weights,
            "img-size": IMG_SIZE,
            "cut-layer": CUT,
            "edges": "edge-a,edge-b",
            "store": store,
            "device": "cpu",
            "batch-size": 1,
            "log-level": "debug",
            "log-format": "json",
            **flags,
        }
        environ = {
            **os.environ,
            "MISTNET_AMQP_URL": broker.url(broker.cloud),
            "ACCESS_KEY_ID": str(s3.access_key_id),
            "SECRET_ACCESS_KEY": str(s3.secret_access_key),
        }
        argv = [str(MISTNET), "cloud", *[f"--{k}={v}" for k, v in args.items()]]
        proc = await asyncio.create_subprocess_exec(*argv, env=environ, stderr=asyncio.subprocess.PIPE)
        return cls(proc)

    async def wait_for_log(self, match: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        while True:
            line = await asyncio.wait_for(self.proc.stderr.readline(), max(deadline - time.monotonic(), 0.01))
            if not line:
                raise AssertionError(f"mistnet cloud exited ({await self.proc.wait()}); last logs: {self.logs[-5:]}")
            entry: dict[str, Any] = json.loads(line)
            self.logs.append(entry)
            if match(entry):
                return entry

    async def exit_code(self, timeout_s: float) -> int:
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout_s):
            while line := await self.proc.stderr.readline():
                self.logs.append(json.loads(line))
            return await self.proc.wait()


def step_of(round_no: int) -> Callable[[dict[str, Any]], bool]:
    return lambda entry: entry.get("msg") == "training step" and entry.get("round") == round_no


def waiting(entry: dict[str, Any]) -> bool:
    return entry.get("msg") == "waiting to start round 1"


async def publish_job_data(env: Env, *, extra: bool = False) -> None:
    """edge-a: train 4+4, val 2; edge-b: train 3, val 1, both done. ``extra``: one more train batch of edge-b."""
    async with SimulatedEdge(env.broker, "edge-a") as a, SimulatedEdge(env.broker, "edge-b") as b:
        await a.send(env.batch("edge-a", 0, "train", 0, 4))
        await a.send(env.batch("edge-a", 1, "train", 4, 4))
        await a.send(env.batch("edge-a", 2, "val", 8, 2))
        await b.send(env.batch("edge-b", 0, "train", 10, 3))
        await b.send(env.batch("edge-b", 1, "val", 13, 1))
        if extra:
            await b.send(env.batch("edge-b", 2, "train", 0, 2))
        await a.done(batches=3, train_images=8, val_images=2)
        await b.done(batches=2, train_images=3, val_images=1)


def assert_trained_exactly_once(store_dir: Path, rounds: int, epochs: int) -> dict[int, set[int]]:
    """Every epoch of every completed round trained each stored train batch up to its watermark once, fully."""
    store = FeatureStore(store_dir)
    try:
        completed = store.completed_rounds()
        log = store.training_log()
        assert [r.round for r in completed] == list(range(1, rounds + 1))
        used = {}
        for r in completed:
            expected = {b.id: b.shape[0] for b in store.batches("train", r.watermark)}
            for epoch in range(1, epochs + 1):
                assert log[(r.round, epoch)] == expected, f"round {r.round} epoch {epoch}"
            used[r.round] = set(expected)
        assert set(log) == {(r, e) for r in range(1, rounds + 1) for e in range(1, epochs + 1)}
        return used
    finally:
        store.close()


class TestKillAndResume:
    """After kill -9 mid-round, a restart finishes the job; every batch is trained once per epoch."""

    async def test_kill_9_mid_round(self, env: Env) -> None:
        store = env.tmp / "store"
        await declare_events_queue(env.broker)
        first = await CloudProcess.start(env, store, rounds=3, epochs=2)
        await first.wait_for_log(waiting, 60)
        await publish_job_data(env)
        await first.wait_for_log(step_of(2), 90)
        first.proc.kill()
        assert await first.proc.wait() == -signal.SIGKILL
        with closing(FeatureStore(store)) as killed:
            assert [r.round for r in killed.completed_rounds()] == [1], "the kill must land inside round 2"

        await publish_job_data(env, extra=True)  # everything again (duplicates), plus one new batch
        second = await CloudProcess.start(env, store, rounds=3, epochs=2)
        assert await second.exit_code(120) == 0
        assert any(e.get("msg") == "resumed from checkpoint" and e.get("round") == 1 for e in second.logs)

        used = assert_trained_exactly_once(store, rounds=3, epochs=2)
        assert len(used[1]) == 3 and len(used[3]) == 4, "the late batch joins a later round, not round 1"
        rounds = events(await drain(env.broker, EVENTS_QUEUE), "round.completed")
        assert sorted(e["round"] for e in rounds) == [1, 2, 3]
        assert rounds[0]["samples_per_edge"] == {"edge-a": 8, "edge-b": 3}
        assert rounds[-1]["samples_per_edge"] == {"edge-a": 8, "edge-b": 5}


class TestSigterm:
    """SIGTERM mid-round exits 0 within 30 s, leaving the last completed round's checkpoint on disk."""

    async def test_sigterm_exits_cleanly(self, env: Env) -> None:
        store = env.tmp / "store"
        cloud = await CloudProcess.start(env, store, rounds=5, epochs=3)
        await cloud.wait_for_log(waiting, 60)
        await publish_job_data(env)
        await cloud.wait_for_log(step_of(2), 90)
        started = time.monotonic()
        cloud.proc.send_signal(signal.SIGTERM)
        assert await cloud.exit_code(30) == 0
        assert time.monotonic() - started < 30
        assert any(e.get("msg") == "stop requested" for e in cloud.logs)
        checkpoint = read_checkpoint(store / "checkpoints", 1)
        assert checkpoint.model.manifest.round == 1 and checkpoint.optimizer["state"]
        assert not (store / "checkpoints" / "round-0002").exists()
        assert_trained_exactly_once(store, rounds=1, epochs=3)

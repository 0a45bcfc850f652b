"""Fault injection on a real job (two edges, the cloud, 2 rounds): after each fault the job completes and the
checker finds nothing lost, duplicated or unexpected.

Each fault is made to land mid-stream by freezing the daemons (SIGSTOP) at the moment they report the
first confirmed batch, injecting the fault, and letting them go on (SIGCONT) into it.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.integration.faults.checker import Verdict, read_ledger, read_store
from tests.integration.faults.job import JOB, Daemon, FaultJob, logged

pytestmark = [pytest.mark.services, pytest.mark.faults, pytest.mark.timeout(300)]

CONFIRMED = logged("batch confirmed")


def assert_clean(verdict: Verdict) -> None:
    assert (verdict.lost_images, verdict.duplicated, verdict.unexpected) == (0, 0, 0), verdict.summary()
    assert verdict.valid, verdict.summary()
    assert verdict.unconfirmed_batches == 0, verdict.summary()


def freeze(*daemons: Daemon) -> None:
    for daemon in daemons:
        daemon.signal(signal.SIGSTOP)


def thaw(*daemons: Daemon) -> None:
    for daemon in daemons:
        daemon.signal(signal.SIGCONT)


class TestCloudKill:
    """kill -9 of the cloud while it ingests, and again mid-round 2: restarts resume and finish the job."""

    async def test_kill_9_cloud(self, fault_job: FaultJob) -> None:
        cloud, edge_a, edge_b = await fault_job.start_all()
        await cloud.wait_log(logged("feature batch stored"), 90)
        started = time.time()
        freeze(cloud)
        await cloud.kill()
        fault_job.fault("kill -9 cloud while ingesting", started)
        await fault_job.finish(edge_a, edge_b)

        cloud = await fault_job.start_cloud(**{"batch-size": 1})
        await cloud.wait_log(lambda e: e.get("msg") == "training step" and e.get("round") == 2, 120)
        started = time.time()
        freeze(cloud)
        await cloud.kill()
        fault_job.fault("kill -9 cloud mid-round 2", started)
        assert [r for r, _ in read_store(fault_job.store)[1]] == [1], "the kill must land inside round 2"
        cloud = await fault_job.start_cloud()
        await fault_job.finish(cloud)
        assert any(e.get("msg") == "resumed from checkpoint" and e.get("round") == 1 for e in cloud.logs)
        assert_clean(await fault_job.check())


class TestEdgeKill:
    """kill -9 of an edge mid-stream: the restart re-sends its outbox and releases the rest, each image once."""

    async def test_kill_9_edge(self, fault_job: FaultJob) -> None:
        cloud, edge_a, edge_b = await fault_job.start_all()
        await edge_a.wait_log(CONFIRMED, 90)
        started = time.time()
        freeze(edge_a)
        await edge_a.kill()
        fault_job.fault("kill -9 edge-a mid-stream", started)
        batches, _ = read_ledger(fault_job.state("edge-a"), "edge-a", JOB)
        assert sum(b.images for b in batches) < fault_job.images["edge-a"], "the kill must land mid-stream"
        edge_a = await fault_job.start_edge("edge-a")
        await fault_job.finish(edge_a, edge_b, cloud)
        assert any(e.get("msg") == "edge.done published" for e in edge_a.logs)
        verdict = await fault_job.check()
        assert_clean(verdict)


class TestBrokerRestart:
    """RabbitMQ stop_app / start_app while edges publish and the cloud consumes: reconnects, nothing lost."""

    async def test_stop_app_start_app(self, fault_job: FaultJob) -> None:
        cloud, edge_a, edge_b = await fault_job.start_all()
        await cloud.wait_log(logged("cloud started"), 120)  # a restart of a running job, not a slow start
        await edge_a.wait_log(CONFIRMED, 90)
        freeze(edge_a, edge_b)
        started = time.time()
        await asyncio.to_thread(fault_job.stack.rabbit.stop_app)
        thaw(edge_a, edge_b)
        await asyncio.sleep(2)  # the edges publish into the outage and retry
        await asyncio.to_thread(fault_job.stack.rabbit.start_app)
        fault_job.fault("rabbitmq stop_app/start_app", started)
        await fault_job.finish(edge_a, edge_b, cloud)
        assert_clean(await fault_job.check())


class TestS3Restart:
    """The S3 server stops and restarts while edges upload and the cloud downloads: retried, nothing lost."""

    async def test_s3_stop_and_restart(self, fault_job: FaultJob) -> None:
        cloud, edge_a, edge_b = await fault_job.start_all()
        await edge_a.wait_log(CONFIRMED, 90)
        freeze(edge_a, edge_b)
        started = time.time()
        await asyncio.to_thread(fault_job.stack.weed.stop)
        thaw(edge_a, edge_b)
        await asyncio.sleep(3)
        await asyncio.to_thread(fault_job.stack.weed.start)
        fault_job.fault("s3 stop/restart", started)
        await fault_job.finish(edge_a, edge_b, cloud)
        assert_clean(await fault_job.check())


class TestS3OutageAtIngest:
    """S3 down while the cloud fetches queued claim-checked batches (its client set to 1 try): each ingest is
    retried in process, so no delivery is spent toward the queue's delivery limit and none is dead-lettered."""

    async def test_outage_costs_no_delivery(self, fault_job: FaultJob) -> None:
        cloud = await fault_job.start_cloud(**{"s3-attempts": 1})
        await cloud.wait_log(logged("cloud started"), 120)
        freeze(cloud)
        edges = [await fault_job.start_edge("edge-a"), await fault_job.start_edge("edge-b")]
        for edge in edges:
            assert await edge.wait(150) == 0, edge.tail(15)
        started = time.time()
        await asyncio.to_thread(fault_job.stack.weed.stop)
        thaw(cloud)
        await cloud.wait_log(logged("transient ingest failure; retrying"), 60)
        await asyncio.sleep(8)  # longer than five requeues with back-off used to survive
        await asyncio.to_thread(fault_job.stack.weed.start)
        fault_job.fault("s3 down while the cloud ingests", started)
        await fault_job.finish(cloud)
        requeued = [e for e in cloud.logs if e.get("msg") == "transient ingest failure persists; requeueing"]
        assert requeued == []
        assert_clean(await fault_job.check())


class TestS3Stall:
    """S3 frozen (SIGSTOP) longer than the client timeout, then resumed: calls time out, retry, succeed.

    The freeze starts as the edges start (each checks it can write to S3, then uploads every batch) and
    lasts until it has hit an S3 call, then 3x the 2 s client timeout more: a stall mid-stream could miss
    every call on inputs this small.
    """

    async def test_network_stall(self, fault_job: FaultJob) -> None:
        cloud = await fault_job.start_cloud()
        await cloud.wait_log(logged("cloud started"), 120)
        started = time.time()
        fault_job.stack.weed.pause()
        edge_a, edge_b = await fault_job.start_edge("edge-a"), await fault_job.start_edge("edge-b")
        await edge_a.wait_log(logged("s3 call failed, retrying"), 90)
        await asyncio.sleep(6)
        fault_job.stack.weed.resume()
        fault_job.fault("s3 stalled (SIGSTOP until a call timed out, then 6 s)", started)
        await fault_job.finish(edge_a, edge_b, cloud)
        assert_clean(await fault_job.check())

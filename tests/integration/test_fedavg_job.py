"""FedAvg on the real broker and S3: the edge and cloud daemons run whole jobs; bad updates are dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumers.cloud.main import cloud_service
from producers.edge.fedavg.outbox import UpdateOutbox
from producers.edge.ledger import LEDGER_FILE
from producers.edge.main import serve
from shared.blob.s3 import S3BlobStore, S3Config
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.evaluation.evaluate import build_predictor, evaluate_batches
from shared.wire import names
from shared.wire.events import RoundCompleted
from shared.wire.features import sha256_hex
from shared.wire.update import UPDATE_TYPE
from shared.yolo.artifact import load_artifact_bytes
from tests.events_factory import round_completed
from tests.integration.cloud_support import (
    EVENTS_QUEUE,
    SimulatedEdge,
    declare_events_queue,
    drain,
    events,
    labelled_folder,
)
from tests.integration.conftest import Broker
from tests.integration.fedavg_support import (
    CONTROL_TAP,
    IMG_SIZE,
    declare_control_tap,
    fedavg_cloud,
    fedavg_edge,
    running,
    update_body,
    wait_for_round,
    zero_update,
)

pytestmark = pytest.mark.services

#: Every field a MistNet round.completed carries (the schema's and a real one's).
MISTNET_FIELDS = {f.alias or name for name, f in RoundCompleted.model_fields.items()} | set(
    round_completed("j", 1).model_dump(by_alias=True)
)


class TestTwoEdgesTwoRounds:
    """Two real edges fine-tune, the cloud averages twice; the events match MistNet's and the models evaluate."""

    async def test_job_completes(
        self, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        public = labelled_folder(coco128, tmp_path / "public", 2, start=20)
        cloud = fedavg_cloud(broker, s3_bucket, tmp_path, yolov5n_pt, rounds=2, public_val=public)
        edges = [
            fedavg_edge(broker, s3_bucket, tmp_path, coco128, yolov5n_pt, edge="edge-a", start=0),
            fedavg_edge(broker, s3_bucket, tmp_path, coco128, yolov5n_pt, edge="edge-b", start=3),
        ]
        await declare_events_queue(broker)
        async with cloud_service(cloud) as service, running(service) as run:
            codes = await asyncio.wait_for(asyncio.gather(*(serve(e) for e in edges)), 150)
            assert codes == [0, 0]  # both exited on the cloud's stop (--once)
            assert await asyncio.wait_for(run, 30) == 0

        arrived = await drain(broker, EVENTS_QUEUE)
        rounds = events(arrived, "round.completed")
        assert [e["round"] for e in rounds] == [1, 2]
        blobs = S3BlobStore(s3_bucket)
        for event in rounds:
            assert set(event) >= MISTNET_FIELDS, MISTNET_FIELDS - set(event)
            RoundCompleted.model_validate(event)
            assert event["algorithm"] == "fedavg" and event["epochs"] == 1
            assert event["samples_per_edge"] == {"edge-a": 3, "edge-b": 3} and event["samples_total"] == 6
            assert event["privacy"]["mechanism"] == "fedavg" and event["privacy"]["epsilon"] is None
            assert "leak" in event["privacy"]["note"]
            assert event["public_val"]["val_samples"] == 2 and event["val"] == event["public_val"]
            assert event["edges_reported"] == ["edge-a", "edge-b"] and event["stragglers"] == []
            assert event["aggregation"]["weights"] == {"edge-a": 0.5, "edge-b": 0.5}
            up, down = event["bytes_received_per_edge"], event["bytes_sent_down_per_edge"]
            assert event["bytes_received"] == sum(up.values()) and min(up.values()) > 1_000_000  # fp16 yolov5n
            assert all(d > up["edge-a"] for d in down.values())  # the float32 global model is twice the fp16 update
            for measured in event["edge_measurements"].values():
                assert measured["train_s"] > 0 and measured["flops"] > 0 and measured["peak_rss_bytes"] > 0
                assert measured["download_bytes"] == down["edge-a"]
            weights = await blobs.get(event["model"]["uri"].split("/", 3)[3], 50 << 20)
            assert sha256_hex(weights) == event["model"]["sha256"]
            model = load_artifact_bytes(weights, event["model"]["uri"])
            m = model.manifest
            assert (m.algorithm, m.cut_layer, m.encoding, m.round, m.job) == (
                "fedavg",
                None,
                "none",
                event["round"],
                broker.job,
            )
            metrics = evaluate_batches(build_predictor(model.build()), iter_batches(discover(public), IMG_SIZE, 2))
            assert metrics.images == 2 and 0.0 <= metrics.map50 <= 1.0
        assert rounds[1]["global_model"]["sha256"] == rounds[0]["model"]["sha256"]  # round 2 starts from round 1
        assert rounds[1]["bytes_received_total"] == rounds[0]["bytes_received"] + rounds[1]["bytes_received"]
        (completed,) = events(arrived, "job.completed")
        assert completed["algorithm"] == "fedavg" and completed["model"] == rounds[1]["model"]
        for edge in edges:
            outbox = UpdateOutbox(edge.state_dir / LEDGER_FILE)
            assert outbox.rounds(broker.job) == {1: "confirmed", 2: "confirmed"}
            outbox.close()


class TestRefusedUpdates:
    """Updates outside the edge's prefix, of the wrong shape, or of the wrong type go to the dead-letter queue."""

    async def test_dead_lettered_with_reasons(
        self, broker: Broker, s3_bucket: S3Config, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        cloud = fedavg_cloud(broker, s3_bucket, tmp_path, yolov5n_pt, rounds=1)
        async with cloud_service(cloud) as service, running(service) as run:
            start = await wait_for_round(cloud.store, 1)
            job = broker.job
            foreign, _ = await zero_update(s3_bucket, job, "edge-a", start, key=f"{job}/updates/edge-b/x.safetensors")
            global_state = load_artifact_bytes(
                (cloud.store / "fedavg" / "global" / "round-0001.safetensors").read_bytes(), "g"
            ).state
            tensors = {k: v.half() * 0 if v.is_floating_point() else v * 0 for k, v in global_state.items()}
            tensors["model.0.conv.weight"] = tensors["model.0.conv.weight"][:, :, :1].contiguous()
            misshapen, _ = await zero_update(s3_bucket, job, "edge-a", start, tensors=tensors)
            async with SimulatedEdge(broker, "edge-a") as edge:
                message_id = names.update_message_id(job, "edge-a", 1)
                await edge.publish(update_body(foreign), message_id=message_id, type=UPDATE_TYPE)
                await edge.publish(update_body(misshapen), message_id=message_id, type=UPDATE_TYPE)
                await edge.publish(b"\x80", message_id="features:x", type="mistnet.features")
            dead = await _collect(broker, names.dead_queue(job), 3)
            service.request_stop()
            assert await asyncio.wait_for(run, 30) == 0
        reasons = sorted(str(m.headers["x-mistnet-reason"]) for m in dead)
        assert reasons == ["invalid-field", "model-mismatch", "ref-outside-prefix"]


class TestQuorumAndStraggler:
    """At the deadline a quorum suffices; an update for a closed round is acknowledged and discarded."""

    async def test_late_update_is_not_averaged(
        self, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        cloud = fedavg_cloud(broker, s3_bucket, tmp_path, yolov5n_pt, rounds=2, min_edges=1, round_deadline_s=0.5)
        edge_a = fedavg_edge(broker, s3_bucket, tmp_path, coco128, yolov5n_pt, edge="edge-a", start=0, count=2)
        await declare_events_queue(broker)
        async with cloud_service(cloud) as service, running(service) as run:
            first = await wait_for_round(cloud.store, 1)
            edge_run = asyncio.create_task(serve(edge_a))
            await wait_for_round(cloud.store, 2, timeout_s=90)
            late, _ = await zero_update(s3_bucket, broker.job, "edge-b", first)
            async with SimulatedEdge(broker, "edge-b") as edge_b:
                await edge_b.publish(
                    update_body(late), message_id=names.update_message_id(broker.job, "edge-b", 1), type=UPDATE_TYPE
                )
            assert await asyncio.wait_for(edge_run, 90) == 0
            assert await asyncio.wait_for(run, 30) == 0
        rounds = events(await drain(broker, EVENTS_QUEUE), "round.completed")
        assert [e["edges_reported"] for e in rounds] == [["edge-a"], ["edge-a"]]
        assert [e["edges_missing"] for e in rounds] == [["edge-b"], ["edge-b"]]
        assert rounds[0]["stragglers"] == [] and rounds[1]["stragglers"] == [{"edge": "edge-b", "round": 1}]
        assert rounds[1]["samples_per_edge"] == {"edge-a": 2}


async def _collect(broker: Broker, queue: str, count: int, timeout_s: float = 30) -> list:  # type: ignore[type-arg]
    """``count`` messages from ``queue``, waiting for them to arrive."""
    got: list = []  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < count:
        got += await drain(broker, queue)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"only {len(got)} of {count} messages arrived in {queue}")
        await asyncio.sleep(0.2)
    return got


class TestCloudRestart:
    """A cloud stopped mid-round resumes from its last completed round and re-sends the same start-round."""

    async def test_resumes_open_round(
        self, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        cloud = fedavg_cloud(broker, s3_bucket, tmp_path, yolov5n_pt, rounds=2)
        edges = [
            fedavg_edge(broker, s3_bucket, tmp_path, coco128, yolov5n_pt, edge=name, start=i * 2, count=2)
            for i, name in enumerate(("edge-a", "edge-b"))
        ]
        await declare_events_queue(broker)
        await declare_control_tap(broker)
        edge_runs = [asyncio.create_task(serve(e)) for e in edges]
        async with cloud_service(cloud) as service, running(service) as run:
            await wait_for_round(cloud.store, 2, timeout_s=90)
            service.request_stop()  # as if killed while round 2 collects updates
            assert await asyncio.wait_for(run, 30) == 0
        async with cloud_service(cloud) as service, running(service) as run:
            assert await asyncio.wait_for(run, 90) == 0
        assert await asyncio.wait_for(asyncio.gather(*edge_runs), 30) == [0, 0]
        rounds = events(await drain(broker, EVENTS_QUEUE), "round.completed")
        assert [e["round"] for e in rounds] == [1, 2]  # round 1 is not redone nor re-announced
        assert rounds[1]["global_model"]["sha256"] == rounds[0]["model"]["sha256"]
        assert rounds[1]["edges_reported"] == ["edge-a", "edge-b"]
        control = await drain(broker, CONTROL_TAP)
        starts = [m for m in control if m.type == "mistnet.start-round"]
        assert [m.message_id for m in starts] == [
            "start-round:testjob:1",
            "start-round:testjob:2",
            "start-round:testjob:2",
        ]
        assert starts[1].body == starts[2].body  # byte for byte: same global model, sha256 and deadline
        assert [m.type for m in control][-1] == "mistnet.stop"

"""The cloud daemon end to end on the real broker and S3: two simulated edges, two rounds."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sqlite3
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from consumers.cloud.main import cloud_service
from consumers.cloud.store import FeatureStore
from shared.blob.s3 import S3BlobStore, S3Config
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.evaluation.evaluate import build_predictor, evaluate_batches
from shared.wire import names
from shared.wire.features import sha256_hex
from shared.yolo.artifact import load_model
from tests.integration.cloud_support import (
    EVENTS_QUEUE,
    IMG_SIZE,
    Env,
    Released,
    SimulatedEdge,
    as_ref,
    cloud_settings,
    declare_events_queue,
    drain,
    events,
    labelled_folder,
    release_images,
)
from tests.integration.conftest import Broker
from tests.prometheus_conventions import exposition_problems

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def released(coco128: Path, yolov5n_pt: Path) -> Released:
    return release_images(coco128, yolov5n_pt, 12)


@pytest.fixture
def env(broker: Broker, s3_bucket: S3Config, tmp_path: Path, released: Released, yolov5n_pt: Path) -> Env:
    return Env(broker, s3_bucket, tmp_path, released, yolov5n_pt)


async def publish_two_edges(env: Env) -> None:
    """edge-a: train 4 inline + 2 by reference, val 2; edge-b: train 3, val 1; then both say done."""
    async with SimulatedEdge(env.broker, "edge-a") as a, SimulatedEdge(env.broker, "edge-b") as b:
        await a.send(env.batch("edge-a", 0, "train", 0, 4))
        by_ref = env.batch("edge-a", 1, "train", 4, 2)
        await as_ref(by_ref, env.s3)
        await a.send(by_ref)
        await a.send(env.batch("edge-a", 2, "val", 6, 2))
        await b.send(env.batch("edge-b", 0, "train", 8, 3))
        await b.send(env.batch("edge-b", 1, "val", 11, 1))
        await a.done(batches=3, train_images=6, val_images=2)
        await b.done(batches=2, train_images=3, val_images=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(port: int | None, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


class TestTwoRoundJob:
    """Both round.completed events arrive with the right samples; the published models load and evaluate."""

    async def test_two_rounds(self, env: Env, coco128: Path) -> None:
        broker, s3_bucket, tmp_path = env.broker, env.s3, env.tmp
        public = labelled_folder(coco128, tmp_path / "public", 4, start=20)
        settings = cloud_settings(
            broker,
            s3_bucket,
            tmp_path / "store",
            env.weights,
            rounds=2,
            public_val=public,
            model_url=str(tmp_path / "model"),
            metrics_port=free_port(),
        )
        await declare_events_queue(broker)
        async with cloud_service(settings) as service:
            run = asyncio.create_task(service.run())
            await publish_two_edges(env)
            assert await asyncio.wait_for(run, 120) == 0
            scraped = http_get(settings.metrics_port, "/metrics")
            assert http_get(settings.metrics_port, "/healthz").startswith("ok: job completed")
        assert 'mistnet_cloud_batches_total{outcome="stored"} 5.0' in scraped
        assert "mistnet_cloud_last_round 2.0" in scraped and 'mistnet_cloud_loss{part="box"}' in scraped
        assert (
            'mistnet_cloud_map50{split="public"}' in scraped and "mistnet_cloud_ingest_lag_seconds_count 5.0" in scraped
        )
        assert "mistnet_cloud_s3_get_seconds_count 1.0" in scraped
        assert exposition_problems(scraped) == []

        arrived = await drain(broker, EVENTS_QUEUE)
        rounds = events(arrived, "round.completed")
        assert [e["round"] for e in rounds] == [1, 2]
        for event in rounds:
            assert event["job"] == broker.job and event["algorithm"] == "mistnet" and event["epochs"] == 1
            assert event["samples_per_edge"] == {"edge-a": 6, "edge-b": 3}
            assert event["samples_total"] == 9
            assert all(
                math.isfinite(event["losses"][part]) and event["losses"][part] >= 0 for part in ("box", "obj", "cls")
            )
            assert event["val"]["val_samples"] == 3
            assert event["public_val"]["val_samples"] == 4
            assert event["privacy"]["mechanism"] == "rr-sym" and event["privacy"]["epsilon_bit"] == 50.0
            assert event["privacy"]["epsilon_image"] == 50.0 * 64 * 8 * 8
            assert event["duration_s"] > 0 and event["finished_at"] >= event["started_at"]
            assert (
                event["model"]["uri"]
                == f"s3://{s3_bucket.bucket}/{names.model_prefix(broker.job, event['round'])}model.safetensors"
            )
        assert rounds[0]["bytes_received"] == rounds[0]["bytes_received_total"] > 6 * 512
        assert (
            rounds[1]["bytes_received"] == 0 and rounds[1]["bytes_received_total"] == rounds[0]["bytes_received_total"]
        )
        assert rounds[0]["baseline_val"]["val_samples"] == 3 and rounds[1]["baseline_val"] is None
        (completed,) = events(arrived, "job.completed")
        assert completed["rounds"] == 2 and completed["model"] == rounds[1]["model"]

        blobs = S3BlobStore(s3_bucket)
        latest = json.loads(await blobs.get(names.latest_model_key(broker.job), 4096))
        assert latest["round"] == 2 and latest["uri"] == rounds[1]["model"]["uri"]
        for event in rounds:
            key = event["model"]["uri"].removeprefix(f"s3://{s3_bucket.bucket}/")
            weights = await blobs.get(key, 50 << 20)
            assert sha256_hex(weights) == event["model"]["sha256"]
            folder = tmp_path / f"downloaded-{event['round']}"
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(weights)
            model = load_model(folder / "model.safetensors")
            assert (model.manifest.round, model.manifest.cut_layer, model.manifest.encoding) == (
                event["round"],
                4,
                "bits",
            )
            assert model.manifest.job == broker.job and model.manifest.img_size == IMG_SIZE
            predictor = build_predictor(model.build(), model.manifest.cut_layer, model.manifest.encoding)
            metrics = evaluate_batches(predictor, iter_batches(discover(public), IMG_SIZE, 4))
            assert metrics.images == 4 and 0.0 <= metrics.map50 <= 1.0
        assert sha256_hex((tmp_path / "model" / "model.safetensors").read_bytes()) == latest["sha256"]

        store = FeatureStore(settings.store)
        log = store.training_log()
        train = {b.id: b.shape[0] for b in store.batches("train")}
        store.close()
        assert log == {(1, 1): train, (2, 1): train}


class TestRestartAfterTheJob:
    """A round committed but not yet published is published on restart; job.completed is sent once."""

    async def test_outbox_is_published_on_restart(self, env: Env) -> None:
        settings = cloud_settings(env.broker, env.s3, env.tmp / "store", env.weights, rounds=1)
        await declare_events_queue(env.broker)
        async with cloud_service(settings) as service:
            run = asyncio.create_task(service.run())
            await publish_two_edges(env)
            assert await asyncio.wait_for(run, 120) == 0
        first = await drain(env.broker, EVENTS_QUEUE)
        assert [m.type for m in first] == ["round.completed", "job.completed"]

        # As if the process died after committing round 1 and before publishing it.
        blobs = S3BlobStore(env.s3)
        await blobs.delete(names.latest_model_key(env.job))
        with closing(sqlite3.connect(settings.store / "index.sqlite")) as db, db:
            db.execute("UPDATE rounds SET published = 0")
            db.execute("DELETE FROM meta WHERE key = 'job_completed_event'")
        async with cloud_service(settings) as service:
            assert await asyncio.wait_for(service.run(), 60) == 0
        again = await drain(env.broker, EVENTS_QUEUE)
        assert [m.type for m in again] == ["round.completed", "job.completed"]
        assert again[0].body == first[0].body and again[0].message_id == first[0].message_id
        assert json.loads(await blobs.get(names.latest_model_key(env.job), 4096))["round"] == 1

        async with cloud_service(settings) as service:  # a third start finds nothing left to do
            assert await asyncio.wait_for(service.run(), 60) == 0
        assert await drain(env.broker, EVENTS_QUEUE) == []

"""The edge daemon against the real RabbitMQ and SeaweedFS: delivery, claim check, edge.done, watching."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producers.edge.intake import file_digest, image_id_of
from producers.edge.ledger import LEDGER_FILE, Ledger
from producers.edge.main import serve
from shared.blob.s3 import S3BlobStore, S3Config
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.wire import names
from shared.wire.features import CONTENT_TYPE, MESSAGE_TYPE, FeatureBatch, check_payload, unpack_bits
from shared.yolo.artifact import extractor_sha256, load_model
from shared.yolo.network import EdgeExtractor, split_state
from shared.yolo.table import build_arch
from tests.integration.conftest import Broker
from tests.integration.edge_support import (
    PERSISTENT,
    Arrived,
    copy_images,
    declare_cloud_side,
    drain_events,
    drain_features,
    edge_settings,
    ledger_rows,
)

pytestmark = pytest.mark.services


def expected_release(weights: Path, data: Path, img_size: int, chunk: int) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """Independently: per image, ``edge.extract(x) > 0`` and its targets, ``chunk`` images a forward as the daemon."""
    loaded = load_model(weights)
    extractor = EdgeExtractor(build_arch(loaded.manifest.arch), 4)
    extractor.load_state_dict(split_state(loaded.state, 0, 4))
    result = {}
    for batch in iter_batches(discover(data), img_size, chunk):
        bits = (extractor.extract(batch.images) > 0).numpy()
        for i, sample in enumerate(batch.samples):
            rows = batch.targets[batch.targets[:, 0] == i].numpy()
            result[sample.image] = (bits[i], rows[:, 1:])
    return result


async def payload_of(batch: FeatureBatch, s3: S3Config) -> bytes:
    if batch.payload is not None:
        return batch.payload
    assert batch.ref is not None
    assert batch.ref.key.startswith(names.edge_prefix(batch.job, batch.edge))
    assert batch.ref.bucket == s3.bucket
    payload = await S3BlobStore(s3).get(batch.ref.key, max_bytes=batch.ref.size)
    check_payload(batch, payload)  # size and sha256 as declared
    return payload


class TestDelivery:
    """Inline and claim-check batches arrive intact: bits, shapes, targets, sha256 and AMQP properties."""

    @pytest.mark.parametrize(
        ("threshold", "path", "chunk"),
        [(1 << 20, "inline", 1), (0, "s3", 3)],  # chunk 3: pieces straddle the batches of 4
    )
    async def test_batches_arrive_intact(
        self,
        *,
        broker: Broker,
        s3_bucket: S3Config,
        coco128: Path,
        yolov5n_pt: Path,
        tmp_path: Path,
        threshold: int,
        path: str,
        chunk: int,
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 6)
        await declare_cloud_side(broker)
        settings = edge_settings(
            broker, s3_bucket, data, state, yolov5n_pt, inline_threshold_bytes=threshold, extract_chunk=chunk
        )
        assert await serve(settings) == 0

        arrived = await drain_features(broker)
        assert len(arrived) == 2  # 6 images, batch 4
        secret = Ledger(state / LEDGER_FILE, "edge-a", exclusive=False).secret
        by_id = {image_id_of(secret, file_digest(p)): p for p in (data / "images").iterdir()}
        expected = expected_release(yolov5n_pt, data, 64, settings.extract_chunk)
        loaded = load_model(yolov5n_pt)
        seen = set()
        for seq, message in enumerate(sorted(arrived, key=lambda a: a.batch().seq)):
            check_properties(message, seq)
            batch = message.batch()
            assert (batch.payload is None) == (path == "s3")
            assert batch.model.extractor_sha256 == extractor_sha256(loaded.state, 4)
            assert (batch.model.arch, batch.model.cut_layer, batch.model.img_size) == ("yolov5n", 4, 64)
            assert batch.privacy.mechanism == "none"
            assert batch.privacy.bits_per_image == 64 * 8 * 8
            bits = unpack_bits(await payload_of(batch, s3_bucket), batch.dims)
            assert batch.dims[1:] == (64, 8, 8)
            targets = np.frombuffer(batch.targets.data, "<f4").reshape(-1, 6)
            for i, image_id in enumerate(batch.image_ids):
                want_bits, want_targets = expected[by_id[image_id]]
                np.testing.assert_array_equal(bits[i], want_bits)
                np.testing.assert_array_equal(targets[targets[:, 0] == i][:, 1:], want_targets)
                seen.add(image_id)
        assert seen == set(by_id)  # every image, none named by its file
        assert not any(p.stem in i for i in seen for p in by_id.values())

        events = await drain_events(broker)
        assert [e["type"] for e in events] == ["edge.done"]
        done = events[0]
        assert (done["edge"], done["images_released"], done["batches"], done["train_images"]) == ("edge-a", 6, 2, 6)
        assert done["bytes_sent"] == sum(len(a.body) for a in arrived) + (6 * 512 if path == "s3" else 0)
        assert done["privacy"]["mechanism"] == "none"
        assert ledger_rows(state, "SELECT COUNT(*) FROM batches WHERE state = 'pending'") == [(0,)]


def check_properties(message: Arrived, seq: int) -> None:
    assert message.message_id == names.feature_message_id("testjob", "edge-a", seq)
    assert message.user_id == "edge-a"
    assert message.content_type == CONTENT_TYPE
    assert message.type == MESSAGE_TYPE
    assert message.delivery_mode == PERSISTENT


class TestWatch:
    """Images added after the first pass are released, and edge.done is re-published with the new counts."""

    async def test_new_images_are_released(
        self, *, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        data, state, spare = tmp_path / "data", tmp_path / "state", tmp_path / "spare"
        copy_images(coco128, data, 4)
        copy_images(coco128, spare, 3, start=4)
        await declare_cloud_side(broker)
        settings = edge_settings(
            broker,
            s3_bucket,
            data,
            state,
            yolov5n_pt,
            once=False,
            poll_interval_s=0.2,
            min_file_age_s=0.0,
            val_fraction=0.5,
        )
        stop = asyncio.Event()
        daemon = asyncio.create_task(serve(settings, stop=stop))
        try:
            first = await wait_for_done(broker, daemon)
            assert (first["images_released"], first["batches"]) == (4, first["batches"])
            for name in ("labels", "images"):  # labels first: an image is taken with the label beside it
                for src in (spare / name).iterdir():
                    shutil.copy(src, data / name / src.name)
            second = await wait_for_done(broker, daemon)
        finally:
            stop.set()
            assert await asyncio.wait_for(daemon, 30) == 0
        assert second["images_released"] == 7
        assert second["train_images"] + second["val_images"] == 7
        assert second["batches"] > first["batches"]
        arrived = await drain_features(broker)
        assert sorted(a.batch().seq for a in arrived) == list(range(second["batches"]))
        ids = [i for a in arrived for i in a.batch().image_ids]
        assert len(ids) == len(set(ids)) == 7
        assert {a.batch().split for a in arrived} <= {"train", "val"}
        for message in arrived:  # batches are single-split
            assert message.batch().split in ("train", "val")


async def wait_for_done(broker: Broker, daemon: asyncio.Task[int], timeout_s: float = 60) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        assert not daemon.done(), f"daemon ended early with {daemon.result()}"
        events = await drain_events(broker)
        if events:
            assert len(events) == 1
            return events[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no edge.done event in time")


class TestReRelease:
    """A restart releases nothing twice; re_release releases again and the ledger accounts the extra ε."""

    async def test_restart_and_re_release(
        self, *, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 3)
        await declare_cloud_side(broker)
        settings = edge_settings(broker, s3_bucket, data, state, yolov5n_pt, privacy="rr-sym", epsilon=2.0)
        assert await serve(settings) == 0
        assert await serve(settings) == 0  # nothing new: edge.done again, same counts
        first = await drain_features(broker)
        events = await drain_events(broker)
        assert [(e["images_released"], e["batches"]) for e in events] == [(3, 1), (3, 1)]
        assert len({e["id"] for e in events}) == 2

        assert await serve(settings.model_copy(update={"re_release": True})) == 0
        second = await drain_features(broker)
        assert [m.batch().seq for m in first + second] == [0, 1]
        assert sorted(second[0].batch().image_ids) == sorted(first[0].batch().image_ids)
        [done] = await drain_events(broker)
        assert (done["images_released"], done["batches"]) == (6, 2)
        epsilon_image = 64 * 8 * 8 * 1.0  # bits per image x ε_bit (rr-sym: ε/2)
        assert done["privacy"]["epsilon_image"] == pytest.approx(epsilon_image)
        assert done["epsilon_spent_max"] == pytest.approx(2 * epsilon_image)
        spent = ledger_rows(state, "SELECT releases, epsilon_spent FROM images")
        assert spent == [(2, pytest.approx(2 * epsilon_image))] * 3

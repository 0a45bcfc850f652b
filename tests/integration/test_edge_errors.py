"""Bad input and unreachable services: one clear message, a non-zero exit, no lost or duplicated release."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from producers.edge.main import serve
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.topology import declare_exchanges
from shared.blob.s3 import S3Config
from tests.integration.conftest import Broker
from tests.integration.edge_support import (
    copy_images,
    declare_cloud_side,
    drain_events,
    drain_features,
    edge_settings,
    ledger_rows,
)

pytestmark = pytest.mark.services


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors the daemon itself reported (aiormq also logs its connection failures)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("producers")]


def released(state: Path) -> dict[str, int]:
    return dict(ledger_rows(state, "SELECT digest, COUNT(*) FROM releases GROUP BY digest"))


class TestBadImages:
    """With on_bad_input=error the daemon stops naming the file; with skip it goes on and notes the skip."""

    @pytest.mark.parametrize(
        ("damage", "expected"),
        [
            (lambda d: (d / "images" / "000000000030.jpg").write_bytes(b"not a jpeg"), r"image .*000000000030\.jpg"),
            (
                lambda d: (d / "labels" / "000000000030.txt").write_text("0 0.5 0.5 0.2 0.2\n45 0.5 oops 0.1\n"),
                r"label file .*000000000030\.txt line 2",
            ),
        ],
        ids=["unreadable-image", "malformed-label"],
    )
    async def test_error_then_skip(
        self,
        *,
        broker: Broker,
        s3_bucket: S3Config,
        coco128: Path,
        yolov5n_pt: Path,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
        damage: object,
        expected: str,
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 6)  # the third image (index 2) is 000000000030
        damage(data)  # type: ignore[operator]
        await declare_cloud_side(broker)
        settings = edge_settings(broker, s3_bucket, data, state, yolov5n_pt, batch_size=2)
        assert await serve(settings) == 1
        [line] = error_lines(caplog)
        assert "\n" not in line
        assert re.search(expected, line), line
        first = await drain_features(broker)
        assert [m.batch().seq for m in first] == [0]  # the batch before the bad one; the bad one's batch not at all
        assert sorted(released(state).values()) == [1, 1]
        assert ledger_rows(state, "SELECT COUNT(*) FROM batches WHERE state = 'pending'") == [(0,)]
        assert await drain_events(broker) == []  # not done

        caplog.clear()
        skipping = settings.model_copy(update={"on_bad_input": "skip"})
        assert await serve(skipping) == 0
        second = await drain_features(broker)
        ids = [i for m in first + second for i in m.batch().image_ids]
        assert len(ids) == len(set(ids)) == 5
        assert sorted(m.batch().seq for m in second) == [1, 2]  # [partner of the bad one, next], [last]
        assert sorted(released(state).values()) == [1] * 5
        [(reason,)] = ledger_rows(state, "SELECT reason FROM images WHERE status = 'skipped'")
        assert re.search(expected, reason)
        [done] = await drain_events(broker)
        assert (done["images_released"], done["batches"], done["images_skipped"]) == (5, 3, 1)


class TestServicesAtStart:
    """A broker that cannot be reached or S3 refusing the credentials stop the daemon before any release."""

    async def test_unreachable_broker(
        self,
        *,
        broker: Broker,
        s3_bucket: S3Config,
        coco128: Path,
        yolov5n_pt: Path,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 2)
        url = broker.edge_url("edge-a").replace(":5672/", ":1/")
        settings = edge_settings(broker, s3_bucket, data, state, yolov5n_pt, amqp_url=url)
        assert await serve(settings) == 1
        [line] = error_lines(caplog)
        assert "cannot connect to RabbitMQ at amqp://edge-a:***@127.0.0.1:1/" in line
        assert "edge-a-pw" not in line
        assert released(state) == {}

    async def test_s3_refuses_credentials(
        self,
        *,
        broker: Broker,
        s3_bucket: S3Config,
        coco128: Path,
        yolov5n_pt: Path,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 4)
        await declare_cloud_side(broker)
        settings = edge_settings(
            broker,
            s3_bucket,
            data,
            state,
            yolov5n_pt,
            inline_threshold_bytes=0,
            s3_secret_access_key=SecretStr("wrong"),
        )
        assert await serve(settings) == 1
        [line] = error_lines(caplog)
        assert "S3 refused the credentials" in line and "SECRET_ACCESS_KEY" in line
        assert released(state) == {}
        assert await drain_features(broker) == []

        good = settings.model_copy(update={"s3_secret_access_key": SecretStr(str(s3_bucket.secret_access_key))})
        assert await serve(good) == 0
        assert sorted(released(state).values()) == [1] * 4
        assert len(await drain_features(broker)) == 1

    async def test_missing_exchanges(
        self,
        *,
        broker: Broker,
        s3_bucket: S3Config,
        coco128: Path,
        yolov5n_pt: Path,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 2)
        settings = edge_settings(broker, s3_bucket, data, state, yolov5n_pt)  # nothing declared in the vhost
        assert await serve(settings) == 1
        [line] = error_lines(caplog)
        assert "exchange 'mistnet.features' does not exist" in line
        assert released(state) == {}


class TestUnroutable:
    """With no queue bound, publishing fails after its retries; the batch waits in the outbox, not lost."""

    async def test_kept_until_routable(
        self, *, broker: Broker, s3_bucket: S3Config, coco128: Path, yolov5n_pt: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:  # fmt: skip
        data, state = tmp_path / "data", tmp_path / "state"
        copy_images(coco128, data, 2)
        connection = await connect(BrokerConfig(broker.url()))
        async with connection:
            await declare_exchanges(await connection.channel())  # exchanges, but nobody's queue yet
        settings = edge_settings(broker, s3_bucket, data, state, yolov5n_pt, publish_attempts=2)
        assert await serve(settings) == 1
        [line] = error_lines(caplog)
        assert "features:testjob:edge-a:0" in line and "not confirmed after 2 attempts" in line
        assert ledger_rows(state, "SELECT seq, state FROM batches") == [(0, "pending")]

        await declare_cloud_side(broker)
        assert await serve(settings) == 0
        [message] = await drain_features(broker)
        assert message.message_id == "features:testjob:edge-a:0" and len(message.batch().image_ids) == 2
        assert sorted(released(state).values()) == [1, 1]

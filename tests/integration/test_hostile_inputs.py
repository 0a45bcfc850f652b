"""Hostile input through other clients than ours (pika, the management HTTP API) into a running ``mistnet cloud``.

Every case of DESIGN §5 and more (huge declared msgpack lengths, deep nesting, a wrong type in every
field, zero/negative dims, a shape whose byte count overflows, refs to another bucket or with ``..``,
replayed ids) is dead-lettered with its reason, or refused by the broker itself (a forged ``user_id``);
the cloud keeps consuming (valid batches sent after are stored) and its memory stays flat.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from consumers.cloud.ingest import REASON_HEADER
from shared.blob.s3 import S3Config
from shared.wire import names
from shared.wire.features import Reason
from tests.integration.cloud_support import CUT, IMG_SIZE, Env, Released, build, release_images, stored, wait_until
from tests.integration.conftest import Broker
from tests.integration.faults.job import MISTNET, Daemon, logged
from tests.integration.hostile_support import (
    MAX_MESSAGE_BYTES,
    Hostile,
    hostile_cases,
    publish_with_management_api,
    publish_with_pika,
)

pytestmark = pytest.mark.services

WAITING = logged("waiting to start round 1")
REFUSED = "feature batch refused"


@pytest.fixture(scope="module")
def released(coco128: Path, yolov5n_pt: Path) -> Released:
    return release_images(coco128, yolov5n_pt, 4)


@pytest.fixture
def env(broker: Broker, s3_bucket: S3Config, tmp_path: Path, released: Released, yolov5n_pt: Path) -> Env:
    return Env(broker, s3_bucket, tmp_path, released, yolov5n_pt)


async def start_cloud(env: Env) -> Daemon:
    args = {
        "job": env.job,
        "blob-store": "s3",
        "s3-endpoint-url": env.s3.endpoint_url,
        "bucket": env.s3.bucket,
        "weights": env.weights,
        "img-size": IMG_SIZE,
        "cut-layer": CUT,
        "privacy": "rr-sym",
        "epsilon": 100,
        "edges": "edge-a,edge-b",
        "store": env.tmp / "store",
        "device": "cpu",
        "prefetch": 4,
        "max-message-bytes": MAX_MESSAGE_BYTES,
        "log-format": "json",
    }
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
    child_env.update(
        {
            "MISTNET_AMQP_URL": env.broker.url(env.broker.cloud),
            "ACCESS_KEY_ID": str(env.s3.access_key_id),
            "SECRET_ACCESS_KEY": str(env.s3.secret_access_key),
        }
    )
    argv = [str(MISTNET), "cloud", *[f"--{k}={v}" for k, v in args.items()]]
    cloud = await Daemon("cloud", argv, child_env).start()
    await cloud.wait_log(WAITING, 90)
    return cloud


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def duplicates(cloud: Daemon) -> int:
    return sum(1 for e in cloud.logs if e.get("msg") == "duplicate feature batch acknowledged")


def refusals(cloud: Daemon) -> int:
    return sum(1 for e in cloud.logs if e.get("msg") == REFUSED)


async def stop(cloud: Daemon) -> None:
    cloud.signal(signal.SIGTERM)
    assert await cloud.wait(30) == 0, cloud.tail()


def feature_id(env: Env, seq: int) -> str:
    return names.feature_message_id(env.job, "edge-a", seq)


async def dead_reasons(env: Env) -> dict[str, str]:
    """Original message id -> reason header of every dead letter of the job (drained)."""
    from tests.integration.cloud_support import drain

    found = {}
    for message in await drain(env.broker, names.dead_queue(env.job)):
        headers = message.headers or {}
        found[str(headers["x-mistnet-original-message-id"])] = str(headers[REASON_HEADER])
    return found


class TestHostileInputs:
    """Each hostile message is dead-lettered with its reason or refused by the broker; the cloud goes on."""

    async def test_every_case(self, env: Env) -> None:
        cases = await hostile_cases(env)
        valid = [Hostile(f"valid-{seq}", build(env.batch("edge-a", seq, "train", 0, 2)), None) for seq in (0, 1)]
        forged = Hostile("forged-user-id", valid[0].body, None, user_id="edge-b")
        cloud = await start_cloud(env)
        try:
            messages = [(feature_id(env, 100 + i), case) for i, case in enumerate(cases)]
            messages += [(feature_id(env, 0), valid[0]), (feature_id(env, 0), valid[0]), (feature_id(env, 90), forged)]
            refused = await asyncio.to_thread(publish_with_pika, env.broker, messages)
            assert set(refused) == {"forged-user-id"}
            assert refused["forged-user-id"].startswith("406 PRECONDITION_FAILED - user_id property set to 'edge-b'")

            via_http = build(env.batch("edge-a", 91, "train", 0, 2))
            answer = publish_with_management_api(env.broker, via_http, feature_id(env, 91), user_id="edge-a")
            assert answer["error"] == 400 and "PRECONDITION_FAILED" in answer["reason"]
            answer = publish_with_management_api(env.broker, via_http, feature_id(env, 92), user_id=None)
            assert answer == {"routed": True}

            await asyncio.to_thread(publish_with_pika, env.broker, [(feature_id(env, 1), valid[1])])
            expected_dead = len(cases) + 1
            await wait_until(
                lambda: (
                    stored(env.tmp / "store") == {("edge-a", 0), ("edge-a", 1)}
                    and refusals(cloud) == expected_dead
                    and duplicates(cloud) >= 1  # the replay may finish after everything else: ingests run concurrently
                ),
                60,
                f"two valid batches stored, {expected_dead} refusals (got {refusals(cloud)}), the replay acknowledged",
            )
            assert duplicates(cloud) == 1
        finally:
            await stop(cloud)
        reasons = await dead_reasons(env)
        expected = {feature_id(env, 100 + i): case.reason.value for i, case in enumerate(cases) if case.reason}
        expected[feature_id(env, 92)] = Reason.USER_ID_MISMATCH.value
        mismatched = {
            case.name: (reasons.get(feature_id(env, 100 + i)), case.reason.value if case.reason else None)
            for i, case in enumerate(cases)
            if reasons.get(feature_id(env, 100 + i)) != (case.reason.value if case.reason else None)
        }
        assert mismatched == {}, "case: (dead-letter reason, expected)"
        assert reasons == expected


class TestMemoryBounded:
    """200 poison messages leave the cloud's RSS flat; the valid batch sent after them is stored."""

    async def test_rss_flat(self, env: Env) -> None:
        cases = [c for c in await hostile_cases(env) if c.reason is not None]
        ids = {c.name: feature_id(env, 100 + i) for i, c in enumerate(cases)}
        cloud = await start_cloud(env)
        try:
            warm_up = [(ids[c.name], c) for c in cases]
            warm_up.append((feature_id(env, 0), Hostile("valid-0", build(env.batch("edge-a", 0, "train", 0, 2)), None)))
            await asyncio.to_thread(publish_with_pika, env.broker, warm_up)
            await wait_until(lambda: refusals(cloud) == len(cases), 60, "the warm-up refusals")
            before = rss_bytes(cloud.pid)
            poison = [(ids[cases[k % len(cases)].name], cases[k % len(cases)]) for k in range(200)]
            poison.append((feature_id(env, 1), Hostile("valid-1", build(env.batch("edge-a", 1, "train", 2, 2)), None)))
            await asyncio.to_thread(publish_with_pika, env.broker, poison)
            await wait_until(
                lambda: refusals(cloud) == len(cases) + 200 and ("edge-a", 1) in stored(env.tmp / "store"),
                120,
                "200 more refusals and the valid batch",
            )
            after = rss_bytes(cloud.pid)
        finally:
            await stop(cloud)
        print(f"\ncloud RSS before {before / 2**20:.1f} MiB, after 200 poison messages {after / 2**20:.1f} MiB")
        assert after - before < 32 * 2**20

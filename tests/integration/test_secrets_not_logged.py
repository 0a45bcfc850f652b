"""No secret is ever logged: the daemons run at debug level, in text and JSON, through success and failure
paths, with known passwords in their AMQP URLs and a known S3 secret; none appears in anything they print."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.amqp.provision import Credentials, JobAccess, provision_job
from shared.blob.s3 import S3Config
from tests.integration.conftest import AMQP_HOST, AMQP_PORT, Broker
from tests.integration.edge_support import copy_images, declare_cloud_side
from tests.integration.faults.job import MISTNET, Daemon

pytestmark = pytest.mark.services


@dataclass(frozen=True)
class Secrets:
    """Users of their own (users are global: the broker fixture's must keep their passwords)."""

    broker: Broker
    s3: S3Config
    edge: str
    edge_password: str
    cloud: str
    cloud_password: str

    def url(self, user: str, password: str, port: int = AMQP_PORT) -> str:
        return f"amqp://{user}:{password}@{AMQP_HOST}:{port}/{self.broker.vhost}"

    @property
    def all(self) -> list[str]:
        return [self.edge_password, self.cloud_password, str(self.s3.secret_access_key)]


@pytest.fixture
def known(broker: Broker, s3_bucket: S3Config) -> Iterator[Secrets]:
    tag = secrets.token_hex(4)
    found = Secrets(
        broker,
        s3_bucket,
        f"sx-{tag}",
        f"AmqpEdgePw{secrets.token_hex(8)}",
        f"sc-{tag}",
        f"AmqpCloudPw{secrets.token_hex(8)}",
    )
    access = JobAccess(
        vhost=broker.vhost,
        job=broker.job,
        edges={found.edge: Credentials(found.edge, found.edge_password)},
        cloud=Credentials(found.cloud, found.cloud_password),
        extra_admins=["guest"],
    )
    provision_job(broker.api, access)
    try:
        yield found
    finally:
        broker.api.delete_user(found.edge)
        broker.api.delete_user(found.cloud)


def _env(amqp_url: str, s3_secret: str, s3: S3Config) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
    env.update({"MISTNET_AMQP_URL": amqp_url, "ACCESS_KEY_ID": str(s3.access_key_id), "SECRET_ACCESS_KEY": s3_secret})
    return env


def _common(known: Secrets, weights: Path, fmt: str) -> list[str]:
    return [
        f"--job={known.broker.job}",
        f"--weights={weights}",
        "--img-size=64",
        "--blob-store=s3",
        f"--s3-endpoint-url={known.s3.endpoint_url}",
        f"--bucket={known.s3.bucket}",
        "--log-level=debug",
        f"--log-format={fmt}",
    ]


async def edge(known: Secrets, tmp: Path, weights: Path, fmt: str, *, amqp_password: str, s3_secret: str) -> Daemon:
    argv = [
        str(MISTNET),
        "edge",
        "--once",
        f"--edge={known.edge}",
        f"--data={tmp / 'data'}",
        f"--state-dir={tmp / 'state'}",
        "--inline-threshold-bytes=0",  # by S3 reference: the S3 secret is used
        "--connect-attempts=1",
        "--s3-attempts=1",
        *_common(known, weights, fmt),
    ]
    return await Daemon("edge", argv, _env(known.url(known.edge, amqp_password), s3_secret, known.s3)).start()


async def cloud(known: Secrets, tmp: Path, weights: Path, fmt: str, *, amqp_url: str, s3_secret: str) -> Daemon:
    # A second edge that never comes: the cloud keeps ingesting until SIGTERM instead of finishing the job.
    argv = [str(MISTNET), "cloud", f"--edges={known.edge},never", f"--store={tmp / 'store'}", "--device=cpu"]
    argv += ["--s3-attempts=1", *_common(known, weights, fmt)]
    return await Daemon("cloud", argv, _env(amqp_url, s3_secret, known.s3)).start()


def has(text: str) -> object:
    return lambda e: text in str(e.get("msg", ""))


def assert_no_secret(daemons: list[Daemon], values: list[str]) -> None:
    for daemon in daemons:
        printed = bytes(daemon.stderr).decode(errors="replace")
        assert printed, f"{daemon.name} printed nothing: the check would be empty"
        leaked = [value for value in values if value in printed]
        assert leaked == [], f"{daemon.name} logged a secret"


@pytest.mark.parametrize("fmt", ["text", "json"])
class TestNoSecretInLogs:
    """Whatever the path and format, neither daemon prints a password or the S3 secret."""

    async def test_success_path(
        self, fmt: str, known: Secrets, tmp_path: Path, coco128: Path, yolov5n_pt: Path
    ) -> None:
        copy_images(coco128, tmp_path / "data", 2)
        s3_secret = str(known.s3.secret_access_key)
        the_cloud = await cloud(
            known, tmp_path, yolov5n_pt, fmt, amqp_url=known.url(known.cloud, known.cloud_password), s3_secret=s3_secret
        )
        try:
            await the_cloud.wait_log(has("waiting to start round 1"), 90)  # type: ignore[arg-type]
            the_edge = await edge(
                known, tmp_path, yolov5n_pt, fmt, amqp_password=known.edge_password, s3_secret=s3_secret
            )
            assert await the_edge.wait(90) == 0, the_edge.tail()
            await the_cloud.wait_log(has("feature batch stored"), 60)  # type: ignore[arg-type]
        finally:
            the_cloud.signal(signal.SIGTERM)
            code = await the_cloud.wait(30)
        assert code == 0, the_cloud.tail()
        assert_no_secret([the_cloud, the_edge], known.all)

    async def test_failure_paths(
        self, fmt: str, known: Secrets, tmp_path: Path, coco128: Path, yolov5n_pt: Path
    ) -> None:
        for folder in (tmp_path, tmp_path / "b"):
            copy_images(coco128, folder / "data", 2)
        await declare_cloud_side(known.broker)  # the exchanges an edge checks before it touches S3
        wrong_amqp, wrong_s3 = f"WrongAmqpPw{secrets.token_hex(8)}", f"WrongS3Secret{secrets.token_hex(8)}"
        runs = [
            await edge(known, tmp_path, yolov5n_pt, fmt, amqp_password=wrong_amqp, s3_secret=wrong_s3),
            await edge(known, tmp_path / "b", yolov5n_pt, fmt, amqp_password=known.edge_password, s3_secret=wrong_s3),
            await cloud(
                known,
                tmp_path,
                yolov5n_pt,
                fmt,
                amqp_url=known.url(known.cloud, wrong_amqp, port=1),
                s3_secret=str(known.s3.secret_access_key),
            ),
            await cloud(
                known,
                tmp_path / "c",
                yolov5n_pt,
                fmt,
                amqp_url=known.url(known.cloud, known.cloud_password),
                s3_secret=wrong_s3,
            ),
        ]
        for run in runs:
            assert await run.wait(120) == 1, run.tail()
        printed = [bytes(r.stderr).decode(errors="replace") for r in runs]
        assert "cannot connect to RabbitMQ" in printed[0] and ":***@" in printed[0]
        assert "refused the credentials" in printed[1] and "refused the credentials" in printed[3]
        assert "cannot connect to RabbitMQ" in printed[2]
        assert_no_secret(runs, [*known.all, wrong_amqp, wrong_s3])

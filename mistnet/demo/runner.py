"""The demo's orchestration: services, provisioning, partitions, daemons, following events, the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aio_pika.abc import AbstractIncomingMessage

from mistnet.demo.assets import Assets
from mistnet.demo.partition import Partition, partition, write_index
from mistnet.demo.processes import Daemon, start_daemon
from mistnet.demo.report import round_rows, text_table
from mistnet.demo.services import S3Server, ServiceError, ensure_rabbitmq, ensure_s3
from mistnet.demo.writeup import write_report
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.management import ManagementClient
from shared.amqp.provision import Credentials, JobAccess, apply_policies, provision_job
from shared.amqp.topology import QueuePolicy, declare_job_topology
from shared.blob.s3 import S3BlobStore, S3Config
from shared.dataset.sources import discover
from shared.wire import names

log = logging.getLogger(__name__)
EDGES = ("edge-a", "edge-b")
CLOUD_USER = "mistnet-cloud"
#: Credentials of deploy/seaweedfs/s3-identities.json, used when that server is already running.
DEPLOY_S3_KEYS = ("mistnet-admin", "mistnet-admin-secret")


@dataclass(frozen=True)
class DemoConfig:
    workdir: Path
    job: str
    assets: Assets
    rounds: int
    epochs: int
    img_size: int
    batch_size: int
    learning_rate: float
    images: int | None
    held_out: int
    val_fraction: float
    privacy: str
    epsilon: float
    cut_layer: int
    blob_store: str
    admin_amqp_url: str
    management_url: str
    s3_port: int
    algorithm: str = "mistnet"
    report: bool = True


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)  # noqa: T201


def _vhost_url(admin_url: str, vhost: str, user: str | None = None, password: str | None = None) -> str:
    parts = urlsplit(admin_url)
    user = user or parts.username or "guest"
    password = password or parts.password or "guest"
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, "/" + vhost, "", ""))


def _provision(cfg: DemoConfig, vhost: str) -> dict[str, Credentials]:
    admin = urlsplit(cfg.admin_amqp_url)
    api = ManagementClient(cfg.management_url, admin.username or "guest", admin.password or "guest")
    creds = {name: Credentials(name, secrets.token_urlsafe(16)) for name in (*EDGES, CLOUD_USER, "mistnet-monitor")}
    provision_job(
        api,
        JobAccess(
            vhost=vhost,
            job=cfg.job,
            edges={e: creds[e] for e in EDGES},
            cloud=creds[CLOUD_USER],
            monitor=creds["mistnet-monitor"],
            extra_admins=[admin.username or "guest"],
        ),
    )
    apply_policies(api, vhost)
    return creds


def _common_env(cfg: DemoConfig, s3: S3Server | None, bucket: str, weights: Path) -> dict[str, str]:
    env = {
        "MISTNET_JOB": cfg.job,
        "MISTNET_WEIGHTS": str(weights),
        "MISTNET_IMG_SIZE": str(cfg.img_size),
        "CUT_LAYER": str(cfg.cut_layer),
        "MISTNET_PRIVACY": cfg.privacy,
        "EPSILON": str(cfg.epsilon),
        "BATCH_SIZE": str(cfg.batch_size),
        "AGGREGATION_ALGORITHM": cfg.algorithm,
        "MISTNET_BLOB_STORE": cfg.blob_store,
        "MISTNET_BUCKET": bucket,
        "MISTNET_LOG_LEVEL": "info",
    }
    if s3 is not None:
        env.update(S3_ENDPOINT_URL=s3.endpoint, ACCESS_KEY_ID=s3.access_key, SECRET_ACCESS_KEY=s3.secret_key)
    return env


async def _follow(cfg: DemoConfig, url: str, daemons: list[Daemon], clock: _Clock) -> list[dict[str, Any]]:
    """Print events as they arrive until job.completed; fail fast when a daemon dies."""
    events: list[dict[str, Any]] = []
    connection = await connect(BrokerConfig(url, name="mistnet-demo"))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(names.EVENTS_EXCHANGE, routing_key=f"{cfg.job}.#")
        rows: list[dict[str, Any]] = []
        last_status = time.monotonic()
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        cloud_done_at: float | None = None

        async def on_message(message: AbstractIncomingMessage) -> None:
            async with message.process():
                await inbox.put(message.body)

        await queue.consume(on_message)
        while True:
            try:
                body: bytes | None = await asyncio.wait_for(inbox.get(), timeout=2.0)
            except TimeoutError:
                body = None
            if body is not None:
                event = json.loads(body)
                events.append(event)
                kind = event.get("type")
                if kind == "edge.done":
                    clock.say(
                        f"{event['edge']}: released {event['images_released']} images "
                        f"({event['train_images']} train, {event['val_images']} private val) in "
                        f"{event['batches']} batches, {event['bytes_sent'] / 1e6:.1f} MB"
                    )
                elif kind == "round.completed":
                    rows = round_rows([e for e in events if e.get("type") == "round.completed"])
                    clock.say(f"round {event['round']}/{event['rounds']} done in {event['duration_s']:.0f}s")
                    print(text_table(rows), file=sys.stderr, flush=True)  # noqa: T201
                elif kind == "job.completed":
                    clock.say("job completed")
                    return events
            for daemon in daemons:
                code = daemon.returncode
                # The cloud exits 0 right after publishing job.completed: give that event time to arrive.
                if daemon.name == "cloud" and code == 0 and cloud_done_at is None:
                    cloud_done_at = time.monotonic()
                late = cloud_done_at is not None and time.monotonic() - cloud_done_at > 15
                if code not in (None, 0) or (daemon.name == "cloud" and late):
                    raise RuntimeError(
                        f"{daemon.name} exited with {code} before the job completed; "
                        f"last log lines:\n{daemon.log_tail()}"
                    )
            if time.monotonic() - last_status > 20:
                last_status = time.monotonic()
                running = [d.name for d in daemons if d.returncode is None]
                clock.say(f"working: {', '.join(running) or 'nothing'} running, {len(events)} events so far")


async def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the job end to end and return a summary; everything started here is stopped before returning."""
    clock = _Clock()
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    clock.say(f"work folder {cfg.workdir}")
    ensure_rabbitmq()
    s3: S3Server | None = None
    daemons: list[Daemon] = []
    try:
        bucket = "mistnet-demo"
        if cfg.blob_store == "s3":
            s3 = ensure_s3(cfg.workdir / "s3", cfg.s3_port, *_s3_keys())
            await S3BlobStore(S3Config(s3.endpoint, s3.access_key, s3.secret_key, bucket)).ensure_bucket()
            clock.say(f"S3 at {s3.endpoint} ({'started' if s3.process else 'already running'}), bucket {bucket}")
        vhost = f"mistnet-{cfg.job}"
        creds = _provision(cfg, vhost)
        admin_url = _vhost_url(cfg.admin_amqp_url, vhost)
        connection = await connect(BrokerConfig(admin_url))
        async with connection:
            await declare_job_topology(await connection.channel(), cfg.job, list(EDGES), QueuePolicy())
        clock.say(f"provisioned vhost {vhost}: users {', '.join(creds)}; topology declared")

        samples = discover(cfg.assets.coco128)[: cfg.images]
        parts = partition(samples, EDGES, cfg.held_out, seed=0)
        data = cfg.workdir / "data"
        public = write_index(parts.held_out, data / "held-out.txt")
        clock.say(
            f"COCO128 split: {', '.join(f'{e} {len(s)}' for e, s in parts.edges.items())}, "
            f"held out {len(parts.held_out)}"
        )

        env = _common_env(cfg, s3, bucket, cfg.assets.weights)
        logs = cfg.workdir / "logs"
        model_dir = cfg.workdir / "model"
        cloud_env = {
            **env,
            "MISTNET_AMQP_URL": _vhost_url(cfg.admin_amqp_url, vhost, CLOUD_USER, creds[CLOUD_USER].password),
        }
        daemons.append(
            start_daemon(
                "cloud",
                [
                    "cloud",
                    "--edges",
                    ",".join(EDGES),
                    "--rounds",
                    str(cfg.rounds),
                    "--epochs",
                    str(cfg.epochs),
                    "--learning-rate",
                    str(cfg.learning_rate),
                    "--store",
                    str(cfg.workdir / "cloud-store"),
                    "--model-url",
                    str(model_dir),
                    "--public-val",
                    str(public),
                ],
                cloud_env,
                logs,
            )
        )
        daemons.extend(_start_edges(cfg, env, vhost=vhost, creds=creds, parts=parts, data=data, logs=logs))
        clock.say("started the cloud and two edges (logs in logs/); following mistnet.events")
        events = await _follow(cfg, admin_url, daemons, clock)
        for daemon in daemons:
            code = daemon.stop()
            if code != 0:
                raise RuntimeError(f"{daemon.name} exited with {code}; see {daemon.log_path}")
        summary = _summary(cfg, clock, vhost, daemons, events)
        if cfg.report:
            report = write_report(cfg, events, model_dir, parts.held_out, cfg.workdir / "report")
            clock.say(f"report: {report}")
            summary["report"] = str(report)
        else:
            summary["events"] = events
        clock.say(f"queues stay in vhost {vhost}: {cfg.management_url}/#/queues (filter: {cfg.job})")
        return summary
    finally:
        for daemon in daemons:
            with contextlib.suppress(Exception):
                daemon.stop(timeout_s=30)
        if s3 is not None:
            s3.stop()


def _start_edges(
    cfg: DemoConfig,
    env: dict[str, str],
    *,
    vhost: str,
    creds: dict[str, Credentials],
    parts: Partition,
    data: Path,
    logs: Path,
) -> list[Daemon]:
    started = []
    for edge in EDGES:
        edge_env = {
            **env,
            "MISTNET_AMQP_URL": _vhost_url(cfg.admin_amqp_url, vhost, edge, creds[edge].password),
            "MISTNET_EDGE": edge,
        }
        started.append(
            start_daemon(
                edge,
                [
                    "edge",
                    "--data",
                    str(write_index(parts.edges[edge], data / f"{edge}.txt")),
                    "--once",
                    "--state-dir",
                    str(cfg.workdir / f"{edge}-state"),
                    "--val-fraction",
                    str(cfg.val_fraction),
                ],
                edge_env,
                logs,
            )
        )
    return started


def _summary(
    cfg: DemoConfig, clock: _Clock, vhost: str, daemons: list[Daemon], events: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "job": cfg.job,
        "vhost": vhost,
        "workdir": str(cfg.workdir),
        "seconds": round(time.monotonic() - clock.start, 1),
        "rounds": round_rows([e for e in events if e.get("type") == "round.completed"]),
        "usage": {d.name: d.usage.to_dict() for d in daemons if d.usage is not None},
    }


def _s3_keys() -> tuple[str | None, str | None]:
    import os

    key, secret = os.environ.get("ACCESS_KEY_ID"), os.environ.get("SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret
    return DEPLOY_S3_KEYS


__all__ = ["DemoConfig", "ServiceError", "run_demo"]

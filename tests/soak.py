"""Soak run of the ingest pipeline: N simulated edges publish synthetic feature batches to ``mistnet cloud``.

    python -m tests.soak --minutes 10 --edges 8        # manual, not in CI; uses the shared services

Each simulated edge is its own broker user (provisioned in a fresh vhost) publishing with confirms as
fast as the cloud keeps up (publishers pause while more than ``--backlog`` batches wait), every
``--ref-every``-th batch by S3 reference. Every 10 s it prints batches/s, MB/s, the queue backlog and
the cloud's RSS; at the end it drains the queue, stops the cloud and checks the store against what the
broker confirmed: lost, duplicated and unexpected must all be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import boto3
import numpy as np

from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.management import ManagementClient
from shared.amqp.provision import Credentials, JobAccess, provision_job
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.amqp.topology import QueuePolicy, declare_job_topology
from shared.blob.s3 import S3BlobStore, S3Config
from shared.privacy import privacy_params, randomize_bits
from shared.wire import names
from shared.wire.features import (
    CONTENT_TYPE,
    MESSAGE_TYPE,
    BlobRef,
    FeatureBatch,
    ModelSpec,
    PrivacyBlock,
    encode_batch,
    encode_targets,
    pack_bits,
    sha256_hex,
)
from shared.yolo.artifact import extractor_sha256, load_model
from shared.yolo.table import build_arch, feature_shape
from tests.integration.faults.checker import read_store

JOB = "soak"
AMQP, MGMT, S3_URL = "127.0.0.1:5672", "http://127.0.0.1:15672", "http://127.0.0.1:8333"
S3_ADMIN = ("mistnet-admin", "mistnet-admin-secret")
PRIVACY = privacy_params("rr-sym", 100.0)
MISTNET = Path(sys.executable).with_name("mistnet")


@dataclass
class Tally:
    """What the broker confirmed: ``(edge, seq) -> images``, and the bytes that went on the wire."""

    confirmed: dict[tuple[str, int], int] = field(default_factory=dict)
    wire_bytes: int = 0


def synthetic_batch(
    edge: str, seq: int, n: int, *, chw: tuple[int, int, int], spec: ModelSpec, rng: np.random.Generator
) -> dict[str, object]:
    """A valid wire map of ``n`` random images: bits through randomised response, one box per image."""
    bits = randomize_bits(rng.random((n, *chw)) > 0.5, PRIVACY, rng)
    boxes = np.column_stack([np.arange(n), rng.integers(0, 80, n), np.full((n, 2), 0.5), np.full((n, 2), 0.25)])
    c, h, w = chw
    return {
        "schema": 1,
        "type": MESSAGE_TYPE,
        "job": JOB,
        "edge": edge,
        "seq": seq,
        "split": "train",
        "created_at": time.time(),
        "model": spec,
        "privacy": PrivacyBlock.model_validate(PRIVACY.to_wire(c * h * w)),
        "shape": [n, c, h, w],
        "encoding": "packbits",
        "payload": pack_bits(bits),
        "image_ids": [f"{seq:012x}{i:04x}{abs(hash(edge)) % 65536:04x}" for i in range(n)],
        "targets": encode_targets(boxes.astype(np.float32)),
    }


async def run_edge(
    edge: str,
    url: str,
    *,
    args: argparse.Namespace,
    ctx: dict[str, object],
    tally: Tally,
    stop: asyncio.Event,
    backlog: list[int],
) -> None:
    """One edge: its own connection and user, ``--inflight`` batches awaiting their confirms at once."""
    connection = await connect(BrokerConfig(url, name=f"soak-{edge}"))
    publisher = ConfirmedPublisher(connection, confirm_timeout_s=60)
    blobs: S3BlobStore = ctx["blobs"]  # type: ignore[assignment]
    rng = np.random.default_rng(abs(hash(edge)) % 2**32)
    next_seq = [0]

    async def worker() -> None:
        while not stop.is_set():
            if backlog[0] > args.backlog:
                await asyncio.sleep(0.05)
                continue
            seq = next_seq[0]
            next_seq[0] += 1
            fields = synthetic_batch(edge, seq, args.batch, chw=ctx["chw"], spec=ctx["spec"], rng=rng)  # type: ignore[arg-type]
            size = len(fields["payload"])  # type: ignore[arg-type]
            by_ref = bool(args.ref_every) and seq % args.ref_every == 0
            if by_ref:
                payload: bytes = fields.pop("payload")  # type: ignore[assignment]
                digest = sha256_hex(payload)
                key = names.feature_object_key(JOB, edge, digest)
                await blobs.put(key, payload)
                fields["ref"] = BlobRef(uri=blobs.uri(key), size=size, sha256=digest)
            body = encode_batch(FeatureBatch.model_validate(fields))
            backlog[0] += 1
            await publisher.publish(
                OutgoingMessage(
                    names.FEATURES_EXCHANGE,
                    names.features_routing_key(JOB, edge),
                    body,
                    message_id=names.feature_message_id(JOB, edge, seq),
                    content_type=CONTENT_TYPE,
                    type=MESSAGE_TYPE,
                    user_id=edge,
                )
            )
            tally.confirmed[(edge, seq)] = args.batch
            tally.wire_bytes += len(body) + (size if by_ref else 0)

    async with connection:
        await asyncio.gather(*(worker() for _ in range(args.inflight)))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stored_count(store: Path) -> int:
    import sqlite3

    if not (store / "index.sqlite").exists():
        return 0
    db = sqlite3.connect(f"file:{store / 'index.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


async def soak(args: argparse.Namespace, work: Path) -> int:
    edges = [f"soak-{i:02d}" for i in range(args.edges)]
    vhost = f"mistnet-soak-{uuid.uuid4().hex[:8]}"
    api = ManagementClient(MGMT, "guest", "guest")
    creds = {e: Credentials(e, f"{e}-pw") for e in edges}
    provision_job(api, JobAccess(vhost, JOB, creds, Credentials("soak-cloud", "soak-cloud-pw"), extra_admins=["guest"]))
    bucket = f"mistnet-soak-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=S3_URL,
        aws_access_key_id=S3_ADMIN[0],
        aws_secret_access_key=S3_ADMIN[1],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    admin_url = f"amqp://guest:guest@{AMQP}/{vhost}"
    async with await connect(BrokerConfig(admin_url)) as connection:
        await declare_job_topology(await connection.channel(), JOB, edges, QueuePolicy())
    loaded = load_model(args.weights, args.img_size)
    chw = feature_shape(build_arch(loaded.manifest.arch, loaded.manifest.nc), 4, args.img_size)
    spec = ModelSpec(
        arch=loaded.manifest.arch,
        cut_layer=4,
        img_size=args.img_size,
        extractor_sha256=extractor_sha256(loaded.state, 4),
    )
    ctx: dict[str, object] = {"chw": chw, "spec": spec, "blobs": S3BlobStore(S3Config(S3_URL, *S3_ADMIN, bucket))}
    store = work / "store"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
    env.update(
        {
            "MISTNET_AMQP_URL": f"amqp://soak-cloud:soak-cloud-pw@{AMQP}/{vhost}",
            "ACCESS_KEY_ID": S3_ADMIN[0],
            "SECRET_ACCESS_KEY": S3_ADMIN[1],
        }
    )
    cloud = await asyncio.create_subprocess_exec(
        str(MISTNET), "cloud", f"--job={JOB}", f"--edges={','.join(edges)}", f"--weights={args.weights}",
        f"--img-size={args.img_size}", "--cut-layer=4", "--privacy=rr-sym", "--epsilon=100", "--blob-store=s3",
        f"--s3-endpoint-url={S3_URL}", f"--bucket={bucket}", f"--store={store}", "--device=cpu",
        f"--prefetch={args.prefetch}", "--log-level=warning",
        env=env, stderr=(work / "cloud.log").open("wb"),
    )  # fmt: skip
    await asyncio.sleep(8)  # start-up (torch import, model)
    tally, stop, backlog = Tally(), asyncio.Event(), [0]
    print(
        f"soak: {args.edges} edges, batch {args.batch} images of {chw} bits"
        f" ({args.batch * int(np.prod(chw)) // 8} B packed), {args.minutes} min, vhost {vhost}"
    )
    tasks = [
        asyncio.create_task(
            run_edge(
                e, f"amqp://{e}:{e}-pw@{AMQP}/{vhost}", args=args, ctx=ctx, tally=tally, stop=stop, backlog=backlog
            )
        )
        for e in edges
    ]

    async def watch_backlog() -> None:
        """Publishers pause on ``backlog``: refreshed from the store twice a second, counted up between."""
        while not stop.is_set():
            backlog[0] = len(tally.confirmed) - stored_count(store)
            await asyncio.sleep(0.5)

    watcher = asyncio.create_task(watch_backlog())
    started = time.monotonic()
    samples: list[tuple[float, int, int, float]] = []
    last = (started, 0, 0)
    while time.monotonic() - started < args.minutes * 60:
        await asyncio.sleep(10)
        now, n_stored = time.monotonic(), stored_count(store)
        rss = rss_mib(cloud.pid)
        samples.append((now - started, n_stored, tally.wire_bytes, rss))
        rate = (n_stored - last[1]) / (now - last[0])
        mbps = (tally.wire_bytes - last[2]) / (now - last[0]) / 1e6
        print(
            f"[{now - started:6.0f}s] stored {n_stored:7d}  {rate:7.1f} batches/s  {mbps:6.2f} MB/s published"
            f"  backlog {len(tally.confirmed) - n_stored:5d}  cloud RSS {rss:7.1f} MiB",
            flush=True,
        )
        last = (now, n_stored, tally.wire_bytes)
        if any(t.done() for t in tasks):
            break
    stop.set()
    await asyncio.gather(*tasks, watcher)
    published = len(tally.confirmed)
    deadline = time.monotonic() + 300
    while stored_count(store) < published and time.monotonic() < deadline:  # noqa: ASYNC110 - another process writes it
        await asyncio.sleep(1)
    elapsed = time.monotonic() - started
    cloud.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(cloud.wait(), 60)
    rows, _, _ = read_store(store)
    stored_keys = [(r.edge, r.seq) for r in rows]
    distinct = set(stored_keys)
    lost = sum(n for key, n in tally.confirmed.items() if key not in distinct)
    duplicated = len(stored_keys) - len(distinct)
    unexpected = sum(1 for key in distinct if key not in tally.confirmed)
    images = sum(tally.confirmed.values())
    rss = [s[3] for s in samples]
    print(f"\nsoak result ({elapsed:.0f} s incl. drain, cloud exit {code})")
    print(f"  published+confirmed {published} batches, {images} images, {tally.wire_bytes / 1e6:.1f} MB on the wire")
    print(
        f"  stored              {len(rows)} batches: {len(rows) / elapsed:.1f} batches/s,"
        f" {images / elapsed:.0f} images/s, {tally.wire_bytes / elapsed / 1e6:.2f} MB/s"
    )
    print(f"  cloud RSS MiB       first {rss[0]:.0f}, min {min(rss):.0f}, max {max(rss):.0f}, last {rss[-1]:.0f}")
    print(
        f"  :lost {lost}  :duplicated {duplicated}  :unexpected {unexpected}"
        f"  :valid? {str(lost == duplicated == unexpected == 0).lower()}"
    )
    api.delete_vhost(vhost)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    s3.delete_bucket(Bucket=bucket)
    return 0 if lost == duplicated == unexpected == 0 and code == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description="Soak run of mistnet's ingest pipeline (shared services).")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--edges", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="images per batch")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--ref-every", type=int, default=8, help="every Nth batch by S3 reference (0: never)")
    parser.add_argument("--backlog", type=int, default=400, help="publishers pause above this many unstored batches")
    parser.add_argument("--prefetch", type=int, default=16)
    parser.add_argument("--inflight", type=int, default=8, help="unconfirmed batches per edge at once")
    parser.add_argument(
        "--weights", default=str(Path(__file__).resolve().parents[2] / "shared/data/weights/yolov5n.pt")
    )
    args = parser.parse_args()
    with TemporaryDirectory(prefix="mistnet-soak-") as work:
        return asyncio.run(soak(args, Path(work)))


if __name__ == "__main__":
    raise SystemExit(main())

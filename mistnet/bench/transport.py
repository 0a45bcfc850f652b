"""Transport figure: edge -> cloud MB/s through RabbitMQ + S3 vs raw S3 put + get of the same bytes.

System: a simulated edge sends synthetic batches through the edge's claim-check path (S3 put, then a
confirmed publish, two in flight as the edge daemon keeps them) to a real ``mistnet cloud`` child,
whose ingest downloads, verifies (size, sha256, schema, labels) and stores them durably (fsync,
SQLite commit) before acknowledging. Timed from the first put to the last batch's ``stored_at`` in
the cloud's index. Raw: the same payloads, each put then got back with boto3, two at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mistnet.bench.env import BenchEnv
from mistnet.bench.processes import Daemon, wait_stored
from mistnet.bench.report import Figure, median, ratio_figure
from mistnet.bench.synthetic import EdgeSender, release_spec, synthetic_batches
from producers.edge.ledger import OutboxRecord
from producers.edge.service import MAX_SENDS_IN_FLIGHT
from shared.wire.features import ModelSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TransportSize:
    batches: int  # per repetition
    batch_size: int
    repeats: int


def raw_seconds(env: BenchEnv, payloads: Sequence[bytes], prefix: str) -> float:
    """Seconds to put each payload and get it back (boto3, ``MAX_SENDS_IN_FLIGHT`` at a time)."""
    client = env.services.s3_client()

    def put_get(item: tuple[int, bytes]) -> None:
        key = f"{prefix}/{item[0]}"
        client.put_object(Bucket=env.bucket, Key=key, Body=item[1])
        body = client.get_object(Bucket=env.bucket, Key=key)["Body"]
        assert len(body.read()) == len(item[1])
        body.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(MAX_SENDS_IN_FLIGHT) as pool:
        list(pool.map(put_get, enumerate(payloads)))
    return time.perf_counter() - started


async def _send(env: BenchEnv, edge: str, records: Sequence[OutboxRecord]) -> float:
    async with EdgeSender(env, edge) as sender:
        started = time.time()
        await sender.send_all(records)
    return started


def bench_transport(
    env: BenchEnv, cloud: Daemon, store: Path, *, model: ModelSpec, chw: tuple[int, int, int], size: TransportSize,
    progress: Progress,
) -> Figure:  # fmt: skip
    """Median over repetitions of system MB/s / raw MB/s, alternated; fills ``store`` with training batches."""
    edge = env.edge_names[0]
    spec = release_spec(env, edge, model, chw)
    rng = np.random.default_rng(7)
    system_rates, raw_rates, ratios = [], [], []
    # Warm-up, not timed: the cloud's first S3 client, connection pools, the allocator.
    warm = list(synthetic_batches(spec, 2, size.batch_size, rng, first_seq=0))
    asyncio.run(_send(env, edge, warm))
    stored = len(warm)
    wait_stored(cloud, store, stored, timeout_s=300)
    raw_seconds(env, [r.payload for r in warm if r.payload is not None], "raw/warm")
    for rep in range(size.repeats):
        records = list(synthetic_batches(spec, size.batches, size.batch_size, rng, first_seq=stored))
        payloads = [r.payload for r in records if r.payload is not None]
        if len(payloads) != len(records):
            raise RuntimeError("transport batches must go by claim check: make them larger than 1 MiB")
        megabytes = sum(len(p) for p in payloads) / 1e6
        started = asyncio.run(_send(env, edge, records))
        stored += len(records)
        done = wait_stored(cloud, store, stored, timeout_s=300)
        system_rates.append(megabytes / (done.last_stored_at - started))
        raw_rates.append(megabytes / raw_seconds(env, payloads, f"raw/{rep}"))
        ratios.append(system_rates[-1] / raw_rates[-1])
        progress(
            f"transport {rep + 1}/{size.repeats}: system {system_rates[-1]:.1f} MB/s, raw {raw_rates[-1]:.1f} MB/s"
        )
    object_mb = len(payloads[0]) / 1e6
    detail = (
        f"{size.batches} batches of {size.batch_size} images ({object_mb:.2f} MB objects, {chw[0]}x{chw[1]}x{chw[2]} "
        f"bits) a repetition: edge claim-check path (S3 put, confirmed publish, {MAX_SENDS_IN_FLIGHT} in flight) to "
        f"a `mistnet cloud` child (head + get, sha256, validate, fsync + SQLite commit, then ack), first put to "
        f"last stored: {median(system_rates):.1f} MB/s vs raw boto3 put + get of the same bytes, "
        f"{MAX_SENDS_IN_FLIGHT} at a time: {median(raw_rates):.1f} MB/s (median of {size.repeats}, alternated)."
    )
    return ratio_figure(
        "transport", "Transport MB/s vs raw S3 put+get", ratios, bar=0.7, direction="min", detail=detail,
        system_mb_s=system_rates, raw_mb_s=raw_rates,
    )  # fmt: skip

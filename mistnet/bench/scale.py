"""Scale figures: the cloud's ingest cost per image with 1, 2, 4, 8 edges and from 128 to 10,000 images.

Cost = CPU seconds of the ``mistnet cloud`` child (all its threads: AMQP, S3 download, sha256,
validation, durable store) per image ingested, measured between "idle and consuming" and "the store
holds every batch of the phase". Simulated edges send synthetic batches through the edge's claim-check
path, each with its own broker user, all at once. Wall seconds per image are recorded beside it.
Flat means max / min of the costs within 10% (bar 1.1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mistnet.bench.env import BenchEnv
from mistnet.bench.processes import Daemon, wait_stored
from mistnet.bench.report import Figure
from mistnet.bench.synthetic import EdgeSender, release_spec, synthetic_batches
from shared.wire.features import ModelSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ScaleSize:
    edges: tuple[int, ...]
    images_per_edge_phase: int  # divisible by batch_size x max(edges)
    image_counts: tuple[int, ...]  # cumulative job sizes of the images series, in order
    small_repeats: int = 1  # fresh clouds measuring the smallest job
    batch_size: int = 32


@dataclass
class Phase:
    """One phase's cost: CPU seconds and wall seconds of the cloud, per image."""

    label: str
    images: int
    cpu_s_per_image: float
    wall_s_per_image: float


class Feeder:
    """Simulated edges of one cloud: their next sequence numbers, their specs, one random stream."""

    def __init__(self, env: BenchEnv, model: ModelSpec, chw: tuple[int, int, int], batch_size: int):
        self.env, self.model, self.chw, self.batch_size = env, model, chw, batch_size
        self.next_seq = dict.fromkeys(env.edge_names, 0)
        self.rng = np.random.default_rng(11)
        self.stored = 0

    async def _edge(self, edge: str, batches: int) -> None:
        spec = release_spec(self.env, edge, self.model, self.chw)
        records = synthetic_batches(spec, batches, self.batch_size, self.rng, first_seq=self.next_seq[edge])
        self.next_seq[edge] += batches
        async with EdgeSender(self.env, edge) as sender:
            await sender.send_all(records)

    def phase(self, daemon: Daemon, store: Path, label: str, edges: Sequence[str], batches_per_edge: int) -> Phase:
        """Send ``batches_per_edge`` from each of ``edges`` at once; the cloud's cost until all are stored."""
        cpu, started = daemon.cpu_seconds(), time.time()

        async def all_edges() -> None:
            await asyncio.gather(*(self._edge(edge, batches_per_edge) for edge in edges))

        asyncio.run(all_edges())
        self.stored += batches_per_edge * len(edges)
        done = wait_stored(daemon, store, self.stored, timeout_s=1200)
        images = batches_per_edge * len(edges) * self.batch_size
        return Phase(label, images, (daemon.cpu_seconds() - cpu) / images, (done.last_stored_at - started) / images)


def _spread(phases: Sequence[Phase]) -> float:
    costs = [p.cpu_s_per_image for p in phases]
    return round(max(costs) / min(costs), 4)


def edges_series(feeder: Feeder, daemon: Daemon, store: Path, size: ScaleSize, progress: Progress) -> Figure:
    """The same number of images from 1, 2, 4, 8 edges at once."""
    names = feeder.env.edge_names
    feeder.phase(daemon, store, "warm-up", names[:1], 1)
    phases = []
    for count in size.edges:
        per_edge = size.images_per_edge_phase // (count * size.batch_size)
        phases.append(feeder.phase(daemon, store, f"{count} edges", names[:count], per_edge))
        progress(f"scale: {count} edge(s): {phases[-1].cpu_s_per_image * 1e3:.2f} ms CPU per image")
    costs = ", ".join(f"{p.label} {p.cpu_s_per_image * 1e3:.2f}" for p in phases)
    return Figure(
        "scale_edges", "Cloud cost/image, 1 to 8 edges (max/min)", _spread(phases), "x", 1.1, "max",
        f"{size.images_per_edge_phase} synthetic images ({size.batch_size} a batch, claim check) a phase from "
        f"1, 2, 4 and 8 simulated edges at once into one `mistnet cloud` child; cloud CPU ms per image: {costs}.",
        {"phases": [vars(p) for p in phases]},
    )  # fmt: skip


def images_series(
    env: BenchEnv, fresh_cloud: Callable[[int], tuple[Daemon, Path]], *, model: ModelSpec,
    chw: tuple[int, int, int], size: ScaleSize, progress: Progress,
) -> Figure:  # fmt: skip
    """Jobs growing through ``image_counts``: cost per image over the job so far at each size.

    The smallest job is the noisiest (a few batches), so it is measured in ``small_repeats`` fresh
    clouds and its median taken; the last of them grows on to the larger sizes.
    """
    small: list[float] = []
    series: list[Phase] = []
    for rep in range(size.small_repeats):
        daemon, store = fresh_cloud(rep)
        try:
            feeder = Feeder(env, model, chw, size.batch_size)
            feeder.phase(daemon, store, "warm-up", env.edge_names[:1], 1)
            phases: list[Phase] = []
            for target in size.image_counts if rep == size.small_repeats - 1 else size.image_counts[:1]:
                done = sum(p.images for p in phases)
                phases.append(
                    feeder.phase(
                        daemon, store, f"{done}-{target}", env.edge_names[:1], (target - done) // size.batch_size
                    )
                )
                total = sum(p.images for p in phases)
                cpu = sum(p.cpu_s_per_image * p.images for p in phases) / total
                wall = sum(p.wall_s_per_image * p.images for p in phases) / total
                if total == size.image_counts[0]:
                    small.append(cpu)
                    if rep < size.small_repeats - 1:
                        continue
                    cpu = sorted(small)[len(small) // 2]
                series.append(Phase(f"{total:,} images", total, cpu, wall))
                progress(f"scale: {total} images: {cpu * 1e3:.2f} ms CPU per image")
        finally:
            daemon.stop()
    costs = ", ".join(f"{p.label} {p.cpu_s_per_image * 1e3:.2f}" for p in series)
    first, last = series[0].images, series[-1].images
    return Figure(
        "scale_images", f"Cloud cost/image, {first} to {last:,} images (max/min)", _spread(series), "x", 1.1, "max",
        f"a simulated edge's job growing to {', '.join(f'{p.images:,}' for p in series)} synthetic images "
        f"({size.batch_size} a batch, claim check) in a fresh `mistnet cloud` child; cloud CPU ms per image over "
        f"the job so far: {costs} (the {first}-image job: median of {size.small_repeats} fresh clouds, "
        f"{', '.join(f'{c * 1e3:.2f}' for c in small)}).",
        {"series": [vars(p) for p in series], "small_job_cpu_s_per_image": small},
    )  # fmt: skip

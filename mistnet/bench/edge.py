"""Edge figure: the real edge daemon's release throughput vs the bare extractor forward on the same images.

Pipeline: ``producers.edge.main.serve`` in this process against the run's broker and bucket (read,
letterbox, extract, randomise, pack, persist, S3 when above the inline threshold, publish with
confirms), timed from its "new images to release" log record (scan done) to its last "batch
confirmed" record. Bare forward: the same images, decoded and letterboxed beforehand and held in
memory as float32, through the same extractor with the same thread settings, extractor threads and
chunks the daemon uses. The ratio is of those two, measured alternately; the best bare forward of a
small configuration sweep is reported beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from mistnet.bench.env import BenchEnv
from mistnet.bench.report import Figure, median, ratio_figure
from producers.edge.extract import cpu_cores, extract_workers, prepare_extractor
from producers.edge.main import serve
from shared.amqp.connection import BrokerConfig, connect
from shared.amqp.topology import QueuePolicy, declare_events_stream, declare_job_queues
from shared.dataset.loader import iter_batches
from shared.dataset.sources import Sample, discover
from shared.yolo.artifact import load_model
from shared.yolo.network import EdgeExtractor, split_state
from shared.yolo.table import build_arch

Progress = Callable[[str], None]
_SERVICE_LOGGER = "producers.edge.service"


@dataclass(frozen=True)
class EdgeSize:
    """How much to measure: images at ``img_size`` through ``arch``'s extractor, ``repeats`` alternations."""

    img_size: int
    images: int
    repeats: int
    sweep_images: int
    batch_size: int = 32
    cut_layer: int = 4


def link_dataset(coco128: Path, dest: Path, count: int) -> Path:
    """A YOLO folder of the first ``count`` COCO128 images and their labels (symlinks)."""
    for sub in ("images", "labels"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for sample in discover(coco128)[:count]:
        (dest / "images" / sample.image.name).symlink_to(sample.image)
        if sample.labels is not None:
            (dest / "labels" / sample.labels.name).symlink_to(sample.labels)
    return dest


def load_extractor(weights: Path, img_size: int, cut_layer: int) -> EdgeExtractor:
    """The extractor as the edge daemon loads it (before :func:`prepare_extractor`)."""
    loaded = load_model(weights, img_size)
    extractor = EdgeExtractor(build_arch(loaded.manifest.arch, loaded.manifest.nc), cut_layer)
    extractor.load_state_dict(split_state(loaded.state, 0, cut_layer))
    return extractor


class _ReleaseTimer(logging.Handler):
    """Timestamps of the edge service's "new images to release" and "batch confirmed" records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.started: float | None = None
        self.confirmed: list[tuple[float, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "new images to release" and self.started is None:
            self.started = record.created
        elif record.msg == "batch confirmed":
            self.confirmed.append((record.created, int(getattr(record, "images", 0))))


async def declare_inbox(env: BenchEnv) -> None:
    """The job's inbox and events stream, declared as the cloud does; the inbox emptied for the next figure."""
    connection = await connect(BrokerConfig(env.amqp_url()))
    async with connection:
        channel = await connection.channel()
        inbox = await declare_job_queues(channel, env.job, QueuePolicy())
        await declare_events_stream(channel, QueuePolicy())
        await inbox.purge()


def run_pipeline(env: BenchEnv, fields: dict[str, object]) -> tuple[float, int]:
    """(seconds, images) of one ``serve`` release of the dataset in ``fields`` (a fresh ledger each time)."""
    logger = logging.getLogger(_SERVICE_LOGGER)
    timer = _ReleaseTimer()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(timer)
    try:
        code = asyncio.run(serve(env.edge_settings(env.edge_names[0], **fields)))
    finally:
        logger.removeHandler(timer)
        logger.setLevel(level)
    if code != 0 or timer.started is None or not timer.confirmed:
        raise RuntimeError(f"the edge daemon exited {code} without confirming a batch; see its log above")
    return timer.confirmed[-1][0] - timer.started, sum(images for _, images in timer.confirmed)


def decoded_chunks(samples: Sequence[Sample], img_size: int, chunk: int) -> list[torch.Tensor]:
    """The images letterboxed as the daemon's loader does, as ``(chunk, 3, S, S) float32`` tensors in memory."""
    return [b.images.float().div_(255.0) for b in iter_batches(samples, img_size, chunk, uint8=True)]


def forward_seconds(extractor: EdgeExtractor, chunks: Sequence[torch.Tensor], workers: int) -> float:
    """Seconds to run every chunk through ``extractor.extract``, ``workers`` at a time, results taken in order."""
    started = time.perf_counter()
    if workers <= 1:
        for chunk in chunks:
            extractor.extract(chunk)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="bench-forward") as pool:
            for _ in _in_order(pool, extractor, chunks, workers):
                pass
    return time.perf_counter() - started


def _in_order(
    pool: ThreadPoolExecutor, extractor: EdgeExtractor, chunks: Sequence[torch.Tensor], workers: int
) -> Iterator[torch.Tensor]:
    pending: deque[object] = deque()
    for chunk in chunks:
        pending.append(pool.submit(extractor.extract, chunk))
        if len(pending) == workers:
            yield pending.popleft().result()  # type: ignore[attr-defined]
    while pending:
        yield pending.popleft().result()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Config:
    name: str
    workers: int
    threads: int
    channels_last: bool
    chunk: int


def sweep(
    extractor_of: Callable[[bool], EdgeExtractor], samples: Sequence[Sample], img_size: int, repeats: int
) -> dict[str, float]:
    """Bare forward images/s of a few arrangements (median of ``repeats`` alternations); torch threads restored."""
    cores = cpu_cores()
    configs = [
        _Config(f"1 thread x {cores} torch threads, NCHW, chunk 1 (before)", 1, cores, False, 1),
        _Config(f"1 thread x {cores} torch threads, channels-last, chunk 1", 1, cores, True, 1),
        _Config(f"{cores} threads x 1 torch thread, NCHW, chunk 1", cores, 1, False, 1),
        _Config(f"{cores} threads x 1 torch thread, channels-last, chunk 1", cores, 1, True, 1),
        _Config(f"{cores} threads x 1 torch thread, channels-last, chunk 2", cores, 1, True, 2),
        _Config(f"1 thread x {cores} torch threads, channels-last, chunk 4", 1, cores, True, 4),
    ]
    models = {cl: extractor_of(cl) for cl in (False, True)}
    chunks = {size: decoded_chunks(samples, img_size, size) for size in {c.chunk for c in configs}}
    rates: dict[str, list[float]] = {c.name: [] for c in configs}
    threads = torch.get_num_threads()
    try:
        for _ in range(repeats):
            for config in configs:
                torch.set_num_threads(config.threads)
                model = models[config.channels_last]
                forward_seconds(model, chunks[config.chunk][:2], config.workers)  # warm
                rates[config.name].append(len(samples) / forward_seconds(model, chunks[config.chunk], config.workers))
    finally:
        torch.set_num_threads(threads)
    return {name: round(median(values), 2) for name, values in rates.items()}


def bench_edge(env: BenchEnv, coco128: Path, weights: Path, size: EdgeSize, progress: Progress) -> Figure:
    """The edge figure: median over ``size.repeats`` of pipeline img/s divided by bare-forward img/s."""
    asyncio.run(declare_inbox(env))
    data = link_dataset(coco128, env.work / "edge-data", size.images)
    samples = discover(data)
    fields: dict[str, object] = {
        "data": data,
        "weights": str(weights),
        "img_size": size.img_size,
        "batch_size": size.batch_size,
        "cut_layer": size.cut_layer,
        "once": True,
        "seed": 1,
        "device": "cpu",
    }
    settings = env.edge_settings(env.edge_names[0], **fields)
    extractor = prepare_extractor(load_extractor(weights, size.img_size, size.cut_layer), torch.device("cpu"))
    workers = extract_workers(extractor, settings.extract_workers)
    chunk = min(settings.extract_chunk, settings.batch_size)
    chunks = decoded_chunks(samples, size.img_size, chunk)
    forward_seconds(extractor, chunks[:4], workers)  # warm up the kernels and the allocator
    pipeline_rates, bare_rates, ratios = [], [], []
    for rep in range(size.repeats):
        seconds, images = run_pipeline(env, {**fields, "state_dir": env.work / f"edge-state-{rep}"})
        prepare_extractor(extractor, torch.device("cpu"))  # the same thread settings the daemon just used
        bare = len(samples) / forward_seconds(extractor, chunks, workers)
        pipeline_rates.append(images / seconds)
        bare_rates.append(bare)
        ratios.append(pipeline_rates[-1] / bare)
        progress(f"edge {rep + 1}/{size.repeats}: pipeline {pipeline_rates[-1]:.1f} img/s, bare {bare:.1f} img/s")
    del chunks
    best = sweep(
        lambda cl: _variant(weights, size, cl), samples[: size.sweep_images], size.img_size, max(2, size.repeats)
    )
    prepare_extractor(extractor, torch.device("cpu"))
    best_name = max(best, key=lambda name: best[name])
    pipeline = median(pipeline_rates)
    detail = (
        f"`mistnet edge` (serve) on {len(samples)} COCO128 images, yolov5n cut {size.cut_layer} at {size.img_size}, "
        f"batch {size.batch_size}, rr-sym ε=100, S3 above 1 MiB, confirms: {pipeline:.1f} img/s vs the bare "
        f"forward on the same images, decoded beforehand, same extractor, {workers} extractor thread(s) x "
        f"{torch.get_num_threads()} torch thread(s), chunk {chunk}: {median(bare_rates):.1f} img/s "
        f"(median of {size.repeats}, alternated). Best bare forward of the sweep: {best[best_name]:.1f} img/s "
        f"({best_name}); pipeline / best = {pipeline / best[best_name]:.2f}."
    )
    return ratio_figure(
        "edge", "Edge pipeline vs bare forward", ratios, bar=0.9, direction="min", detail=detail,
        pipeline_img_s=pipeline_rates, bare_img_s=bare_rates, extract_threads=workers,
        torch_threads=torch.get_num_threads(), chunk=chunk, sweep_img_s=best, best_bare_img_s=best[best_name],
        pipeline_vs_best=round(pipeline / best[best_name], 4),
    )  # fmt: skip


def _variant(weights: Path, size: EdgeSize, channels_last: bool) -> EdgeExtractor:
    extractor = load_extractor(weights, size.img_size, size.cut_layer)
    return extractor.to(memory_format=torch.channels_last) if channels_last else extractor

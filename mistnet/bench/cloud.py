"""Cloud figure: training samples/s from the feature store the real ingest filled vs from tensors in memory.

Store: the cloud's own round training (:meth:`Trainer.train_round`) over batches that came through the
broker and S3 into a ``mistnet cloud`` child's store (by the transport figure): its loader thread reads
each step's images from the store's files and unpacks the bits while the previous step trains. Memory:
the same steps, in the same order, on the same float32 tensors unpacked beforehand, fed straight to
:meth:`Trainer.step`. Both start from the same weights with the same settings; they alternate.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from consumers.cloud.batching import FeatureLoader, plan_epoch
from consumers.cloud.model import JobModel
from consumers.cloud.store import FeatureStore, StoredBatch
from consumers.cloud.trainer import TrainConfig, Trainer, return_large_frees
from mistnet.bench.report import Figure, median, ratio_figure
from shared.config.cloud import CloudSettings
from shared.yolo.artifact import load_model

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CloudSize:
    batches: int  # stored batches trained per repetition
    repeats: int
    images_per_batch: int | None = None  # only the first images of each stored batch (a quick run)


def train_config(settings: CloudSettings) -> TrainConfig:
    """What ``mistnet cloud`` trains with (as its composition root builds it)."""
    return TrainConfig(
        epochs=1,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        optimizer=settings.optimizer,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        img_size=settings.img_size,
        recompute_activations=settings.low_memory_training,
    )


def in_memory_steps(batches: Sequence[StoredBatch], config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The round's steps (same plan, same order) as float32 features and targets held in memory."""
    plan = plan_epoch(batches, config.batch_size, np.random.default_rng([config.seed, 1, 1]))
    loader = FeatureLoader(batches, config.batch_size)
    return [(step.features.copy(), step.targets.copy()) for step in loader.steps(plan)]


def _first(batch: StoredBatch, images: int | None) -> StoredBatch:
    """The first ``images`` of a stored batch (its file holds them first), with their targets."""
    if images is None or images >= batch.shape[0]:
        return batch
    targets = batch.targets[batch.targets[:, 0] < images]
    return dataclasses.replace(batch, shape=(images, *batch.shape[1:]), targets=targets)


def bench_cloud(store_dir: Path, settings: CloudSettings, size: CloudSize, progress: Progress) -> Figure:
    """Median over repetitions of (store samples/s) / (in-memory samples/s)."""
    if settings.low_memory_training:
        return_large_frees()  # as the daemon does
    model = JobModel.from_loaded(load_model(settings.weights, settings.img_size), settings.cut_layer, settings.img_size)
    config = train_config(settings)
    store = FeatureStore(store_dir)
    try:
        batches = [_first(b, size.images_per_batch) for b in store.batches("train")[: size.batches]]
    finally:
        store.close()
    if not batches:
        raise RuntimeError(f"no training batches in {store_dir}")
    images = sum(b.shape[0] for b in batches)
    steps = in_memory_steps(batches, config)

    def trainer() -> Trainer:
        torch.manual_seed(settings.seed)
        return Trainer(model.cloud_part(), config, torch.device("cpu"))

    warm = trainer()
    warm.step(*steps[0])  # first-step allocations and kernel choices, outside the timings
    store_rates, memory_rates, ratios = [], [], []
    for rep in range(size.repeats):
        fresh = trainer()
        started = time.perf_counter()
        result = fresh.train_round(1, batches, threading.Event())
        store_rates.append(images / (time.perf_counter() - started))
        fresh = trainer()
        started = time.perf_counter()
        for features, targets in steps:
            fresh.step(features, targets)
        memory_rates.append(images / (time.perf_counter() - started))
        ratios.append(store_rates[-1] / memory_rates[-1])
        progress(f"cloud {rep + 1}/{size.repeats}: store {store_rates[-1]:.2f}, memory {memory_rates[-1]:.2f} img/s")
        assert result.steps == len(steps)
    detail = (
        f"`Trainer.train_round` ({model.arch.name} cut {settings.cut_layer} at {settings.img_size}, batch "
        f"{config.batch_size}, {len(steps)} steps, recompute_activations={config.recompute_activations}) reading "
        f"synthetic batches that came through RabbitMQ + S3 into a `mistnet cloud` child's feature store: "
        f"{median(store_rates):.2f} samples/s vs the same steps on float32 tensors in memory: "
        f"{median(memory_rates):.2f} samples/s (median of {size.repeats}, alternated)."
    )
    return ratio_figure(
        "cloud", "Cloud training from ingest vs in memory", ratios, bar=0.95, direction="min", detail=detail,
        store_samples_s=store_rates, memory_samples_s=memory_rates,
    )  # fmt: skip

"""Fine-tuning a whole YOLOv5 model on labelled images: an edge's FedAvg round, or a centralised baseline.

Same loss, optimizer and gradient clip as the cloud's MistNet trainer, on letterboxed square images
without augmentation (MistNet's edges release un-augmented images too). Runs in the caller's thread;
``stop`` is checked before every step so that a SIGTERM ends training at a step boundary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shared.dataset.loader import OnError, iter_batches
from shared.dataset.sources import Sample
from shared.training.loss import YoloLoss
from shared.training.optim import OptimizerConfig, build_optimizer
from shared.yolo.network import YoloSegment

#: YOLOv5 v7's gradient-norm clip, as the cloud trainer uses it.
MAX_GRAD_NORM = 10.0

Losses = tuple[float, float, float]


class TrainingStoppedError(Exception):
    """Training was stopped at a step boundary; the model holds a partial update and must be discarded."""


@dataclass(frozen=True)
class FullTrainConfig:
    """One local training run: ``epochs`` passes over the samples in a seeded order per epoch."""

    epochs: int
    batch_size: int
    img_size: int
    optimizer: OptimizerConfig
    seed: int
    workers: int = 2
    on_error: OnError = "skip"


@dataclass(frozen=True)
class FullTraining:
    """What a run did: mean per-image ``losses`` (box, obj, cls) over every step that trained.

    ``samples``: distinct images trained (readable ones); ``images``: image passes over all epochs.
    """

    losses: Losses
    epoch_losses: list[Losses]
    samples: int
    images: int
    steps: int
    skipped_steps: int
    seconds: float


def train_full(
    model: YoloSegment,
    samples: Sequence[Sample],
    config: FullTrainConfig,
    *,
    device: torch.device,
    stop: threading.Event | None = None,
    on_step: Callable[[int, int, Losses | None], None] | None = None,
) -> FullTraining:
    """Fine-tune ``model`` (the full rows ``[0, end]``) in place on ``samples`` with the YOLOv5 loss.

    ``on_step(epoch, step, losses or None if skipped)`` is called after each step. Raises
    :class:`TrainingStoppedError` when ``stop`` is set, ValueError when nothing can be trained.
    """
    if model.start != 0 or model.stop != model.arch.num_layers:
        raise ValueError(f"train_full needs the whole model, got rows [{model.start}, {model.stop})")
    if not samples:
        raise ValueError("no training images: give a dataset with at least one labelled image")
    started = time.perf_counter()
    model.to(device).train()
    loss = YoloLoss(model.detect, config.img_size)
    optimizer = build_optimizer(model, config.optimizer)
    epoch_losses: list[Losses] = []
    sums, images, steps, skipped, distinct = np.zeros(3), 0, 0, 0, 0
    for epoch in range(1, config.epochs + 1):
        order = np.random.default_rng([config.seed, epoch]).permutation(len(samples))
        batches = iter_batches(
            [samples[i] for i in order],
            config.img_size,
            config.batch_size,
            on_error=config.on_error,
            workers=config.workers,
            num_classes=model.arch.nc,
        )
        epoch_sums, epoch_images = np.zeros(3), 0
        try:
            for batch in batches:
                if stop is not None and stop.is_set():
                    raise TrainingStoppedError(f"stopped in epoch {epoch} after {steps} steps")
                parts = _step(model, loss, optimizer, batch.images.to(device), batch.targets.to(device))
                steps += 1
                n = len(batch.samples)
                distinct += n if epoch == 1 else 0
                if parts is None:
                    skipped += 1
                else:
                    epoch_sums += parts * n
                    epoch_images += n
                if on_step is not None:
                    on_step(epoch, steps, None if parts is None else _triple(parts))
        finally:
            _close(batches)  # an abandoned loader must not leave decodes running
        sums += epoch_sums
        images += epoch_images
        epoch_losses.append(_triple(epoch_sums / max(epoch_images, 1)))
    if distinct == 0:
        raise ValueError("none of the training images could be read")
    return FullTraining(
        losses=_triple(sums / max(images, 1)),
        epoch_losses=epoch_losses,
        samples=distinct,
        images=images,
        steps=steps,
        skipped_steps=skipped,
        seconds=time.perf_counter() - started,
    )


def _step(
    model: YoloSegment, loss: YoloLoss, optimizer: torch.optim.Optimizer, x: torch.Tensor, targets: torch.Tensor
) -> np.ndarray | None:
    """One optimizer step; None (and no update) when the loss is not finite."""
    maps = model(x)
    assert isinstance(maps, list), "a model in train mode returns the raw Detect maps"
    total, parts = loss(maps, targets)
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(total):
        return None
    total.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    result: np.ndarray = parts.cpu().numpy()
    return result


def _close(iterator: object) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _triple(values: np.ndarray) -> Losses:
    box, obj, cls = (float(v) for v in values)
    return box, obj, cls

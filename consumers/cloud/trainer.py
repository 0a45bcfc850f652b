"""Training the cloud part ``[cut, end]`` on stored features with the YOLOv5 loss, one round at a time.

Runs in a worker thread; ``stop`` is checked before every step so that SIGTERM ends a round at a
step boundary. The round's log says how many images of each stored batch every epoch trained.
On CUDA, feature batches go from pinned buffers with non-blocking copies and steps use mixed
precision (autocast + GradScaler); on a CPU they run in float32 exactly as before.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from consumers.cloud.batching import FeatureLoader, plan_epoch
from consumers.cloud.model import recompute_in_backward
from consumers.cloud.store import StoredBatch
from shared.training.loss import YoloLoss
from shared.yolo.network import YoloSegment

log = logging.getLogger(__name__)

#: YOLOv5 v7's gradient-norm clip: keeps one bad batch from wrecking the pretrained head.
_MAX_GRAD_NORM = 10.0


class TrainingInterruptedError(Exception):
    """The round was stopped at a step boundary (SIGTERM); its partial updates must be discarded."""


@dataclass(frozen=True)
class TrainConfig:
    """The seed job's optimizer settings and the round's shape."""

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: Literal["sgd", "adam"]
    momentum: float
    weight_decay: float
    seed: int
    img_size: int
    #: Activation checkpointing of the C3, SPPF and Conv rows: identical results, less memory, more time.
    recompute_activations: bool = False


@dataclass(frozen=True)
class RoundTraining:
    """What one round did: mean ``losses`` (box, obj, cls) per image, and the per-epoch log.

    ``log``: ``(epoch, batch_id) -> images trained``; ``samples_per_edge``: training images per edge.
    """

    losses: tuple[float, float, float]
    steps: int
    skipped_steps: int
    log: dict[tuple[int, int], int]
    samples_per_edge: dict[str, int]


#: Frees at least this large go straight back to the system (see :func:`return_large_frees`).
_MMAP_THRESHOLD_BYTES = 16 << 20
_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


def return_large_frees(threshold_bytes: int = _MMAP_THRESHOLD_BYTES) -> bool:
    """Process-wide (call it from the composition root): glibc serves allocations of ``threshold_bytes``
    and more by mmap, so their memory returns to the system when freed. True where it took effect.

    glibc's default threshold grows to 32 MiB after large frees; training then keeps activations of
    4-32 MiB in its heap, fragmented, and its peak RSS grows by a gigabyte or more (yolov5s at 640,
    batch 32: 4.9 GB instead of 3.6 GB). Other C libraries are left alone.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False


def resolve_device(name: Literal["cpu", "cuda", "auto"]) -> torch.device:
    """``auto``: CUDA when present; ``cuda`` without a GPU is an error naming the setting."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA GPU is available; use --device cpu or auto")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """YOLOv5's groups: weight decay on convolution weights only, none on BatchNorm weights and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.learning_rate, betas=(config.momentum, 0.999))
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum, nesterov=True)


class Trainer:
    """Owns the cloud part (on ``device``), its optimizer and its loss; mixed precision on CUDA only."""

    def __init__(self, cloud: YoloSegment, config: TrainConfig, device: torch.device):
        self.model = cloud.to(device)
        if config.recompute_activations:
            recompute_in_backward(self.model)
        self.config = config
        self.device = device
        self.loss = YoloLoss(cloud.detect, config.img_size)
        self.optimizer = build_optimizer(cloud, config)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def train_round(self, round_no: int, batches: Sequence[StoredBatch], stop: threading.Event) -> RoundTraining:
        """``epochs`` epochs over every image of ``batches`` (each once per epoch, seeded shuffle)."""
        config = self.config
        # One step ahead is enough to hide the loading; each more costs a float32 batch of memory.
        loader = FeatureLoader(batches, config.batch_size, prefetch=1, pin_memory=self.device.type == "cuda")
        trained: Counter[tuple[int, int]] = Counter()
        sums = np.zeros(3)
        images = steps = skipped = 0
        self.model.train()
        for epoch in range(1, config.epochs + 1):
            rng = np.random.default_rng([config.seed, round_no, epoch])
            for step in loader.steps(plan_epoch(batches, config.batch_size, rng)):
                if stop.is_set():
                    raise TrainingInterruptedError(f"round {round_no} stopped in epoch {epoch} after {steps} steps")
                parts = self.step(step.features, step.targets)
                steps += 1
                if parts is None:
                    skipped += 1
                    log.warning("non-finite loss, step skipped", extra={"round": round_no, "epoch": epoch})
                else:
                    sums += parts * len(step.slots)
                    images += len(step.slots)
                for b, _ in step.slots:
                    trained[(epoch, batches[b].id)] += 1
                log.debug(
                    "training step",
                    extra={
                        "round": round_no,
                        "epoch": epoch,
                        "step": steps,
                        "loss": None if parts is None else parts.sum(),
                    },
                )
        per_edge: Counter[str] = Counter()
        for batch in batches:
            per_edge[batch.edge] += batch.shape[0]
        box, obj, cls = (sums / max(images, 1)).tolist()
        return RoundTraining((box, obj, cls), steps, skipped, dict(trained), dict(per_edge))

    def step(self, features: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        """One optimizer step on ``features`` (N, C, H, W) float32 0/1 and ``targets`` (M, 6); the loss parts
        (box, obj, cls), or None when the loss was not finite and the step was skipped."""
        x = torch.from_numpy(features).to(self.device, non_blocking=True)
        t = torch.from_numpy(targets).to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            maps = self.model(x)
            assert isinstance(maps, list)
            total, parts = self.loss(maps, t)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            return None
        self.scaler.scale(total).backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.scaler.unscale_(self.optimizer)  # clip the true gradients (a no-op scale of 1 on a CPU)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), _MAX_GRAD_NORM)
        self.scaler.step(self.optimizer)  # skips the step if mixed precision overflowed
        self.scaler.update()
        result: np.ndarray = parts.float().cpu().numpy()
        return result

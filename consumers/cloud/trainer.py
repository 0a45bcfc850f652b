"""Training the cloud part ``[cut, end]`` on stored features with the YOLOv5 loss, one round at a time.

Runs in a worker thread; ``stop`` is checked before every step so that SIGTERM ends a round at a
step boundary. The round's log says how many images of each stored batch every epoch trained.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from consumers.cloud.batching import FeatureLoader, plan_epoch
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
    """Owns the cloud part (on ``device``), its optimizer and its loss."""

    def __init__(self, cloud: YoloSegment, config: TrainConfig, device: torch.device):
        self.model = cloud.to(device)
        self.config = config
        self.device = device
        self.loss = YoloLoss(cloud.detect, config.img_size)
        self.optimizer = build_optimizer(cloud, config)

    def train_round(self, round_no: int, batches: Sequence[StoredBatch], stop: threading.Event) -> RoundTraining:
        """``epochs`` epochs over every image of ``batches`` (each once per epoch, seeded shuffle)."""
        config = self.config
        loader = FeatureLoader(batches, config.batch_size)
        trained: Counter[tuple[int, int]] = Counter()
        sums = np.zeros(3)
        images = steps = skipped = 0
        self.model.train()
        for epoch in range(1, config.epochs + 1):
            rng = np.random.default_rng([config.seed, round_no, epoch])
            for step in loader.steps(plan_epoch(batches, config.batch_size, rng)):
                if stop.is_set():
                    raise TrainingInterruptedError(f"round {round_no} stopped in epoch {epoch} after {steps} steps")
                parts = self._step(step.features, step.targets)
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

    def _step(self, features: np.ndarray, targets: np.ndarray) -> np.ndarray | None:
        x = torch.from_numpy(features).to(self.device, non_blocking=True)
        t = torch.from_numpy(targets).to(self.device)
        maps = self.model(x)
        assert isinstance(maps, list)
        total, parts = self.loss(maps, t)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(total):
            return None
        total.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), _MAX_GRAD_NORM)
        self.optimizer.step()
        result: np.ndarray = parts.cpu().numpy()
        return result

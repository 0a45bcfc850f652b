"""The seed job's optimizer (YOLOv5's parameter groups) and where to train, for any model part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD (Nesterov, YOLOv5's default) or Adam; ``momentum`` is Adam's beta1."""

    kind: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """YOLOv5's groups: weight decay on convolution weights only, none on BatchNorm weights and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.kind == "adam":
        return torch.optim.Adam(groups, lr=config.learning_rate, betas=(config.momentum, 0.999))
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum, nesterov=True)


def resolve_device(name: Literal["cpu", "cuda", "auto"]) -> torch.device:
    """``auto``: CUDA when present; ``cuda`` without a GPU is an error naming the setting."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA GPU is available; use --device cpu or auto")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")

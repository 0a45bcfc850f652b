"""Load official YOLOv5 ``.pt`` checkpoints without executing any pickled code.

The checkpoints pickle ``models.yolo.Model`` and friends. torch's ``weights_only`` unpickler is used
with every class name the file may reference mapped to one inert stub: unpickling can then only
create plain containers and tensors, never run YOLOv5 (or any other) code. The tensors are read off
the stub tree afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shared.yolo.table import SIZES, build_arch


class _Inert:
    """Stand-in for every pickled module class: holds the pickled ``__dict__`` and nothing else."""


_STUBBED_CLASSES = (
    "models.yolo.Model",
    "models.yolo.DetectionModel",
    "models.yolo.Detect",
    "models.common.Conv",
    "models.common.C3",
    "models.common.Bottleneck",
    "models.common.SPPF",
    "models.common.SPP",
    "models.common.Focus",
    "models.common.Concat",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
)

# Output channels of row 0 identify the size when the pickled yaml is missing or edited.
_SIZE_BY_STEM = {16: "n", 32: "s", 48: "m", 64: "l", 80: "x"}


class CheckpointError(ValueError):
    """The file is not a YOLOv5 checkpoint we can read safely."""


@dataclass(frozen=True)
class OfficialCheckpoint:
    """Tensors and facts read from an official checkpoint."""

    arch: str
    nc: int
    names: list[str]
    state: dict[str, torch.Tensor]


def _tensors(node: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    attrs = getattr(node, "__dict__", {})
    skip = attrs.get("_non_persistent_buffers_set", set())
    for group in ("_parameters", "_buffers"):
        for name, tensor in (attrs.get(group) or {}).items():
            if tensor is not None and name not in skip:
                yield prefix + name, tensor
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            yield from _tensors(child, f"{prefix}{name}.")


def _class_names(raw: Any, nc: int) -> list[str]:
    if isinstance(raw, dict):
        return [str(raw[i]) for i in sorted(raw)]
    if isinstance(raw, list | tuple) and len(raw) == nc:
        return [str(n) for n in raw]
    return [f"class{i}" for i in range(nc)]


def _arch_name(model: _Inert, state: dict[str, torch.Tensor]) -> str:
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict):
        multiples = (yaml.get("depth_multiple"), yaml.get("width_multiple"))
        for size, known in SIZES.items():
            if multiples == known:
                return f"yolov5{size}"
    stem = state.get("model.0.conv.weight")
    if stem is None or int(stem.shape[0]) not in _SIZE_BY_STEM:
        raise CheckpointError("cannot tell the YOLOv5 size: no v6.x stem convolution 'model.0.conv.weight'")
    return f"yolov5{_SIZE_BY_STEM[int(stem.shape[0])]}"


def load_official(path: Path) -> OfficialCheckpoint:
    """Read an official YOLOv5 v6.x/v7.0 detection checkpoint safely, tensors cast to float32."""
    stubs: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [(_Inert, n) for n in _STUBBED_CLASSES]
    try:
        with torch.serialization.safe_globals(stubs):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or hostile files
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint that loads without executing code ({exc})") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(payload).__name__}")
    model = payload.get("ema") or payload.get("model")
    if not isinstance(model, _Inert):
        raise CheckpointError(f"{path}: the checkpoint holds no 'model' or 'ema' entry")
    state = {name: t.float() if t.is_floating_point() else t for name, t in _tensors(model, "")}
    arch = _arch_name(model, state)
    head = state.get("model.24.m.0.bias")
    if head is None:
        raise CheckpointError(f"{path}: no Detect head at row 24; only v6.x detection models are supported")
    nc = int(head.shape[0]) // 3 - 5
    build_arch(arch, nc)  # validates nc
    names = _class_names(getattr(model, "names", None), nc)
    return OfficialCheckpoint(arch=arch, nc=nc, names=names, state=state)

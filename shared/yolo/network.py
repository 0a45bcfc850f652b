"""YOLOv5 as runnable segments of the table: the full model, the frozen edge part and the cloud part.

A segment owns rows ``[start, stop)`` under their official indices (state-dict keys ``model.<i>.…``),
so the edge and cloud parts load straight from the full model's state dict.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.yolo.blocks import Detect, build_block
from shared.yolo.table import ArchSpec, build_arch, check_cut, detect_strides, kept_outputs

#: Eval-mode output of a segment that ends with Detect: decoded (N, A, no) and the raw maps.
Detections = tuple[torch.Tensor, list[torch.Tensor]]


class YoloSegment(nn.Module):
    """Runs table rows ``[start, stop)``; its input is the image (start 0) or row ``start-1``'s output."""

    def __init__(self, arch: ArchSpec, start: int = 0, stop: int | None = None):
        super().__init__()
        stop = arch.num_layers if stop is None else stop
        if not 0 <= start < stop <= arch.num_layers:
            raise ValueError(f"segment [{start}, {stop}) is outside the {arch.num_layers} rows of {arch.name}")
        self.arch = arch
        self.start = start
        self.stop = stop
        strides = detect_strides(arch)
        self.model = nn.ModuleDict(
            {str(row.index): build_block(row, arch.nc, arch.anchors_px, strides) for row in arch.rows[start:stop]}
        )
        self._keep = kept_outputs(arch, start)

    @property
    def detect(self) -> Detect:
        """The Detect head; only the segment that ends the model has one."""
        head = self.model[str(self.arch.num_layers - 1)]
        assert isinstance(head, Detect)
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | Detections:
        saved: dict[int, torch.Tensor] = {}
        y: torch.Tensor | list[torch.Tensor] | Detections = x
        for row in self.arch.rows[self.start : self.stop]:
            block = self.model[str(row.index)]
            assert isinstance(y, torch.Tensor)
            if len(row.sources) == 1:
                y = block(y)
            else:
                y = block([y if s == row.index - 1 else saved[s] for s in row.sources])
            if row.index in self._keep and isinstance(y, torch.Tensor):
                saved[row.index] = y
        return y


class EdgeExtractor(YoloSegment):
    """Frozen rows ``[0, cut)``: eval-mode BatchNorm, no gradients, whatever ``train()`` is asked."""

    def __init__(self, arch: ArchSpec, cut_layer: int):
        super().__init__(arch, 0, check_cut(arch, cut_layer))
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> EdgeExtractor:
        super().train(False)
        return self

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) float32 in [0, 1] -> (N, C, S/s, S/s) float32 activations of row ``cut-1``."""
        out = self(images)
        assert isinstance(out, torch.Tensor)
        return out


def build_model(arch_name: str = "yolov5n", nc: int = 80) -> YoloSegment:
    """The full YOLOv5 model (rows 0..24), randomly initialised."""
    return YoloSegment(build_arch(arch_name, nc))


def split_state(state: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    """Entries of a full state dict that belong to rows ``[start, stop)``."""
    return {k: v for k, v in state.items() if start <= int(k.split(".")[1]) < stop}


def split_model(full: YoloSegment, cut_layer: int) -> tuple[EdgeExtractor, YoloSegment]:
    """Edge part ``[0, cut)`` and cloud part ``[cut, end]`` with copies of ``full``'s weights."""
    arch = full.arch
    check_cut(arch, cut_layer)
    state = full.state_dict()
    edge = EdgeExtractor(arch, cut_layer)
    edge.load_state_dict(split_state(state, 0, cut_layer))
    cloud = YoloSegment(arch, cut_layer)
    cloud.load_state_dict(split_state(state, cut_layer, arch.num_layers))
    return edge, cloud

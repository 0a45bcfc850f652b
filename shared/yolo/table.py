"""The YOLOv5 v6.x model as a declarative table, scaled per size, and the pure facts derived from it.

Each row is ``(sources, repeats, kind, args)`` as in the official yaml; indices are identical, so
``cut_layer=4`` means what it means in Sedna and Plato. Nothing here touches torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

#: (depth multiple, width multiple) of the official model sizes.
SIZES: Final[dict[str, tuple[float, float]]] = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.00, 1.00),
    "x": (1.33, 1.25),
}

#: Anchors in pixels for P3/8, P4/16, P5/32 (COCO defaults of v6.x).
ANCHORS_PX: Final[tuple[tuple[float, ...], ...]] = (
    (10, 13, 16, 30, 33, 23),
    (30, 61, 62, 45, 59, 119),
    (116, 90, 156, 198, 373, 326),
)


@dataclass(frozen=True)
class _BaseRow:
    """A row as the v6.x yaml writes it: channels are those of the 1.0-width model, -1 is "the row before"."""

    sources: tuple[int, ...]
    repeats: int
    kind: str
    channels: int = 0
    kernel: int = 1
    stride: int = 1
    padding: int | None = None
    shortcut: bool = True


_BASE_ROWS: Final[tuple[_BaseRow, ...]] = (
    _BaseRow((-1,), 1, "Conv", 64, 6, 2, 2),  # 0  P1/2
    _BaseRow((-1,), 1, "Conv", 128, 3, 2),  # 1  P2/4
    _BaseRow((-1,), 3, "C3", 128),  # 2
    _BaseRow((-1,), 1, "Conv", 256, 3, 2),  # 3  P3/8
    _BaseRow((-1,), 6, "C3", 256),  # 4
    _BaseRow((-1,), 1, "Conv", 512, 3, 2),  # 5  P4/16
    _BaseRow((-1,), 9, "C3", 512),  # 6
    _BaseRow((-1,), 1, "Conv", 1024, 3, 2),  # 7  P5/32
    _BaseRow((-1,), 3, "C3", 1024),  # 8
    _BaseRow((-1,), 1, "SPPF", 1024, 5),  # 9
    _BaseRow((-1,), 1, "Conv", 512, 1, 1),  # 10
    _BaseRow((-1,), 1, "Upsample", stride=2),  # 11
    _BaseRow((-1, 6), 1, "Concat"),  # 12 cat backbone P4
    _BaseRow((-1,), 3, "C3", 512, shortcut=False),  # 13
    _BaseRow((-1,), 1, "Conv", 256, 1, 1),  # 14
    _BaseRow((-1,), 1, "Upsample", stride=2),  # 15
    _BaseRow((-1, 4), 1, "Concat"),  # 16 cat backbone P3
    _BaseRow((-1,), 3, "C3", 256, shortcut=False),  # 17 (P3/8 small)
    _BaseRow((-1,), 1, "Conv", 256, 3, 2),  # 18
    _BaseRow((-1, 14), 1, "Concat"),  # 19 cat head P4
    _BaseRow((-1,), 3, "C3", 512, shortcut=False),  # 20 (P4/16 medium)
    _BaseRow((-1,), 1, "Conv", 512, 3, 2),  # 21
    _BaseRow((-1, 10), 1, "Concat"),  # 22 cat head P5
    _BaseRow((-1,), 3, "C3", 1024, shortcut=False),  # 23 (P5/32 large)
    _BaseRow((17, 20, 23), 1, "Detect"),  # 24 Detect(P3, P4, P5)
)


@dataclass(frozen=True)
class Row:
    """One scaled row: absolute source indices, block kind, input and output channels, block args."""

    index: int
    sources: tuple[int, ...]
    kind: str
    in_channels: tuple[int, ...]
    out_channels: int
    repeats: int
    kernel: int = 1
    stride: int = 1
    padding: int | None = None
    shortcut: bool = True


@dataclass(frozen=True)
class ArchSpec:
    """A YOLOv5 size: its name (``yolov5n``...), the scaled rows, class count and anchors."""

    name: str
    rows: tuple[Row, ...]
    nc: int
    anchors_px: tuple[tuple[float, ...], ...]

    @property
    def detect(self) -> Row:
        return self.rows[-1]

    @property
    def num_layers(self) -> int:
        return len(self.rows)


def _make_divisible(value: float, divisor: int = 8) -> int:
    return math.ceil(value / divisor) * divisor


def arch_names() -> list[str]:
    """The model names this table builds: ``yolov5n`` ... ``yolov5x``."""
    return [f"yolov5{size}" for size in SIZES]


def build_arch(name: str, nc: int = 80) -> ArchSpec:
    """Scale the v6.x table for ``name`` (``yolov5n``/``s``/``m``/``l``/``x``) and ``nc`` classes."""
    size = name.removeprefix("yolov5")
    if size not in SIZES or not name.startswith("yolov5"):
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(arch_names())}")
    if nc < 1:
        raise ValueError(f"number of classes must be at least 1, got {nc}")
    depth, width = SIZES[size]
    rows: list[Row] = []
    for index, base in enumerate(_BASE_ROWS):
        sources = tuple(index + s if s < 0 else s for s in base.sources)
        in_ch = (3,) if index == 0 else tuple(rows[s].out_channels for s in sources)
        repeats = max(round(base.repeats * depth), 1) if base.repeats > 1 else base.repeats
        if base.kind in ("Conv", "C3", "SPPF"):
            out_ch = _make_divisible(base.channels * width)
        elif base.kind == "Concat":
            out_ch = sum(in_ch)
        elif base.kind == "Upsample":
            out_ch = in_ch[0]
        else:  # Detect: its outputs are per level, not one tensor
            out_ch = 0
        rows.append(
            Row(
                index,
                sources,
                base.kind,
                in_ch,
                out_ch,
                repeats,
                base.kernel,
                base.stride,
                base.padding,
                base.shortcut,
            )
        )
    return ArchSpec(name=name, rows=tuple(rows), nc=nc, anchors_px=ANCHORS_PX)


def output_strides(arch: ArchSpec) -> list[int]:
    """Spatial stride (input pixels per cell) of every row's output, derived from the table."""
    strides: list[int] = []
    for row in arch.rows:
        base = 1 if row.index == 0 else strides[row.sources[0]]
        if row.kind == "Conv":
            strides.append(base * row.stride)
        elif row.kind == "Upsample":
            strides.append(base // row.stride)
        else:
            strides.append(base)
    return strides


def detect_strides(arch: ArchSpec) -> list[int]:
    """Strides of the Detect inputs, e.g. ``[8, 16, 32]``."""
    strides = output_strides(arch)
    return [strides[s] for s in arch.detect.sources]


def valid_cuts(arch: ArchSpec) -> list[int]:
    """Cut layers where the edge's single output (row ``cut-1``) is all the cloud needs.

    A cut is valid when no row at or after it reads an output from before the cut, other than
    the cloud's first row reading its input (row ``cut-1``).
    """
    cuts = []
    for cut in range(1, arch.num_layers):
        crossing = {
            source
            for row in arch.rows[cut:]
            for source in row.sources
            if source < cut and not (row.index == cut and source == cut - 1)
        }
        if not crossing:
            cuts.append(cut)
    return cuts


def check_cut(arch: ArchSpec, cut_layer: int) -> int:
    """Return ``cut_layer`` if valid for ``arch``, else raise naming the valid range."""
    cuts = valid_cuts(arch)
    if cut_layer not in cuts:
        span = f"{cuts[0]}..{cuts[-1]}" if cuts == list(range(cuts[0], cuts[-1] + 1)) else str(cuts)
        raise ValueError(
            f"cut_layer={cut_layer} is not a valid split of {arch.name}: valid cut layers are {span} "
            "(later layers read outputs from before any other cut)"
        )
    return cut_layer


def feature_shape(arch: ArchSpec, cut_layer: int, img_size: int) -> tuple[int, int, int]:
    """Shape ``(C, H, W)`` of what the edge sends at ``cut_layer`` for a square ``img_size`` input."""
    check_cut(arch, cut_layer)
    stride = output_strides(arch)[cut_layer - 1]
    if img_size % 32:
        raise ValueError(f"img_size must be a multiple of 32 (the largest stride), got {img_size}")
    side = img_size // stride
    return (arch.rows[cut_layer - 1].out_channels, side, side)


def kept_outputs(arch: ArchSpec, start: int) -> frozenset[int]:
    """Rows from ``start`` on whose outputs a later row reads other than as its direct input."""
    return frozenset(source for row in arch.rows[start:] for source in row.sources if source != row.index - 1)

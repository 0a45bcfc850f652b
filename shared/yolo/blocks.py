"""The YOLOv5 v6.x building blocks: Conv, Bottleneck, C3, SPPF, Concat, Upsample and Detect."""

from __future__ import annotations

import torch
from torch import nn

from shared.yolo.table import Row

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class Conv(nn.Module):
    """Bias-free convolution, BatchNorm, SiLU; padding ``k // 2`` unless given."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int | None = None):
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn(self.conv(x)))
        return y


class Bottleneck(nn.Module):
    """1x1 then 3x3 conv, with a residual add when asked and the shapes allow it."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, expansion: float = 0.5):
        super().__init__()
        hidden = int(c_out * expansion)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden, c_out, 3, 1)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convs: a bottleneck branch and a bypass branch, fused by a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, repeats: int = 1, shortcut: bool = True):
        super().__init__()
        hidden = int(c_out * 0.5)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(c_in, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, expansion=1.0) for _ in range(repeats)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))
        return y


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained max-pools concatenated with their input."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=kernel, stride=1, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        out: torch.Tensor = self.cv2(torch.cat((x, y1, y2, self.m(y2)), dim=1))
        return out


class Concat(nn.Module):
    """Concatenate a list of tensors along channels."""

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class Detect(nn.Module):
    """Per-level 1x1 convs predicting ``na`` anchors x (4 box + 1 objectness + nc classes).

    ``anchors`` is stored in grid units, (nl, na, 2), as the official checkpoints store it.
    Training mode returns the raw maps, each (N, na, H, W, no); eval mode also returns the decoded
    boxes (N, sum(na*H*W), no) as ``[cx, cy, w, h, obj, cls...]`` in input pixels.
    """

    def __init__(
        self,
        nc: int,
        anchors_px: tuple[tuple[float, ...], ...],
        channels: tuple[int, ...],
        strides: list[int],
    ):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors_px)
        self.na = len(anchors_px[0]) // 2
        stride = torch.tensor(strides, dtype=torch.float32)
        anchors = torch.tensor(anchors_px, dtype=torch.float32).view(self.nl, self.na, 2)
        self.stride: torch.Tensor
        self.anchors: torch.Tensor
        self.register_buffer("stride", stride, persistent=False)
        self.register_buffer("anchors", anchors / stride.view(-1, 1, 1))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)

    def raw_maps(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply the heads: each level becomes (N, na, H, W, no) logits."""
        maps = []
        for level, x in enumerate(xs):
            y: torch.Tensor = self.m[level](x)
            n, _, h, w = y.shape
            maps.append(y.view(n, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return maps

    def decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Official v6.x decoding: xy = (2σ - 0.5 + cell)·stride, wh = (2σ)²·anchor_px."""
        out = []
        for level, raw in enumerate(maps):
            n, na, h, w, no = raw.shape
            stride = self.stride[level]
            ys, xs = torch.meshgrid(
                torch.arange(h, device=raw.device, dtype=raw.dtype),
                torch.arange(w, device=raw.device, dtype=raw.dtype),
                indexing="ij",
            )
            grid = torch.stack((xs, ys), dim=2).view(1, 1, h, w, 2) - 0.5
            anchor_px = (self.anchors[level] * stride).view(1, na, 1, 1, 2)
            y = raw.sigmoid()
            xy = (y[..., :2] * 2 + grid) * stride
            wh = (y[..., 2:4] * 2) ** 2 * anchor_px
            out.append(torch.cat((xy, wh, y[..., 4:]), dim=-1).view(n, -1, no))
        return torch.cat(out, dim=1)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        maps = self.raw_maps(xs)
        if self.training:
            return maps
        return self.decode(maps), maps


def build_block(row: Row, nc: int, anchors_px: tuple[tuple[float, ...], ...], strides: list[int]) -> nn.Module:
    """The torch module for one scaled table row."""
    c_in = row.in_channels[0]
    if row.kind == "Conv":
        return Conv(c_in, row.out_channels, row.kernel, row.stride, row.padding)
    if row.kind == "C3":
        return C3(c_in, row.out_channels, row.repeats, row.shortcut)
    if row.kind == "SPPF":
        return SPPF(c_in, row.out_channels, row.kernel)
    if row.kind == "Upsample":
        return nn.Upsample(scale_factor=float(row.stride), mode="nearest")
    if row.kind == "Concat":
        return Concat()
    if row.kind == "Detect":
        return Detect(nc, anchors_px, row.in_channels, strides)
    raise ValueError(f"unknown block kind {row.kind!r} in row {row.index}")

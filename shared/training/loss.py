"""The YOLOv5 v6.x detection loss: target assignment, CIoU box loss, objectness and class BCE.

Written from the published formulas (YOLOv5 v6.x ``ComputeLoss``), not from its code. All boxes in
here are in grid units of their level unless a name says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from shared.yolo.blocks import Detect

#: Objectness weight per level, as YOLOv5 sets it for three levels (P3-P5) and for any other count.
_BALANCE_3_LEVELS = (4.0, 1.0, 0.4)
_BALANCE_OTHER = (4.0, 1.0, 0.25, 0.06, 0.02)

#: Half a cell: a target also trains a neighbouring cell when it lies within this of their border.
_NEIGHBOUR_MARGIN = 0.5


@dataclass(frozen=True)
class LossHyp:
    """Loss gains and assignment settings, at YOLOv5's defaults for 3 levels, 80 classes and 640 px.

    ``balance`` (objectness weight per level) of ``None`` means YOLOv5's default for the level count.
    ``gr`` is how much the objectness target is the prediction's CIoU (1) rather than 1 (0).
    """

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    label_smoothing: float = 0.0
    gr: float = 1.0
    balance: tuple[float, ...] | None = None


@dataclass(frozen=True)
class LevelTargets:
    """Targets assigned to one level: P (image, anchor, cell) slots and what each should predict.

    ``image``, ``anchor``, ``gy``, ``gx``, ``cls``: (P,) int64; ``box``: (P, 4) float32
    ``[x, y, w, h]`` in grid units with xy relative to the cell's top-left corner.
    """

    image: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor
    box: Tensor
    cls: Tensor


def bbox_ciou(box1_xywh: Tensor, box2_xywh: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of boxes ``(..., 4) [cx, cy, w, h]`` (broadcast against each other) -> ``(...)``.

    CIoU = IoU - (ρ²/c² + v·α): ρ is the centre distance, c the enclosing box's diagonal,
    v = 4/π²·(atan(w2/h2) - atan(w1/h1))² the aspect mismatch and α = v / (v - IoU + 1 + ε),
    taken as a constant for the gradient. Ranges over (-1, 1]; identical boxes give 1 - O(ε).
    """
    x1, y1, w1, h1 = box1_xywh.unbind(-1)
    x2, y2, w2, h2 = box2_xywh.unbind(-1)
    left1, right1, top1, bottom1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    left2, right2, top2, bottom2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.minimum(right1, right2) - torch.maximum(left1, left2)).clamp(min=0) * (
        torch.minimum(bottom1, bottom2) - torch.maximum(top1, top2)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union

    enclosing_w = torch.maximum(right1, right2) - torch.minimum(left1, left2)
    enclosing_h = torch.maximum(bottom1, bottom2) - torch.minimum(top1, top2)
    diagonal_sq = enclosing_w**2 + enclosing_h**2 + eps
    centre_dist_sq = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (centre_dist_sq / diagonal_sq + v * alpha)


def assign_targets(targets: Tensor, anchors: Tensor, grid_hw: tuple[int, int], anchor_t: float) -> LevelTargets:
    """Match ``targets`` (M, 6) ``[img, cls, cx, cy, w, h]`` (normalised) to one level's cells and anchors.

    ``anchors``: (na, 2) in grid units; ``grid_hw``: the level's (ny, nx). An anchor takes a target when
    neither side differs by more than ``anchor_t`` times; the target's own cell and the neighbours (two,
    unless at the grid edge or on a cell border) within half a cell of its centre each get one slot per such
    anchor. Order: by neighbour kind (own, left, up, right, down), then anchor, then target.
    """
    ny, nx = grid_hw
    device = targets.device
    boxes = targets[:, 2:6].float() * torch.tensor([nx, ny, nx, ny], device=device, dtype=torch.float32)
    ratio = boxes[None, :, 2:4] / anchors[:, None, :].float()  # (na, M, 2)
    worst_ratio = torch.maximum(ratio, 1 / ratio).amax(dim=2)  # (na, M)
    anchor_idx, target_idx = (worst_ratio < anchor_t).nonzero(as_tuple=True)

    xy = boxes[target_idx, :2]
    xy_from_far_edge = torch.tensor([nx, ny], device=device, dtype=torch.float32) - xy
    near_low = (xy % 1 < _NEIGHBOUR_MARGIN) & (xy > 1)  # (P, 2): left / up neighbour too
    near_high = (xy_from_far_edge % 1 < _NEIGHBOUR_MARGIN) & (xy_from_far_edge > 1)  # right / down
    own = torch.ones_like(near_low[:, 0])
    use = torch.stack((own, near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1]))  # (5, P)
    shifts = torch.tensor(
        [[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, 0.0], [0.0, -0.5]], device=device, dtype=torch.float32
    )
    kind, pair = use.nonzero(as_tuple=True)

    xy = xy[pair]
    cell = (xy - shifts[kind]).floor()
    cell[:, 0].clamp_(0, nx - 1)
    cell[:, 1].clamp_(0, ny - 1)
    matched = targets[target_idx[pair]]
    return LevelTargets(
        image=matched[:, 0].long(),
        anchor=anchor_idx[pair],
        gy=cell[:, 1].long(),
        gx=cell[:, 0].long(),
        box=torch.cat((xy - cell, boxes[target_idx[pair], 2:4]), dim=1),
        cls=matched[:, 1].long(),
    )


def _kept_by_last_write(slot: Tensor, num_slots: int) -> Tensor:
    """(P,) bool marking, among entries sharing a ``slot`` index, only the last one."""
    order = torch.arange(slot.numel(), device=slot.device)
    last = torch.full((num_slots,), -1, device=slot.device, dtype=order.dtype)
    last.scatter_reduce_(0, slot, order, reduce="amax")
    return last[slot] == order


class YoloLoss:
    """YOLOv5 v6.x loss over a Detect head's raw maps, with gains scaled as YOLOv5's trainer scales them.

    Anchors and strides are read from ``detect`` at each call, so it follows the head across devices.
    """

    def __init__(self, detect: Detect, img_size: int, hyp: LossHyp = LossHyp()) -> None:
        if img_size <= 0:
            raise ValueError(f"img_size must be a positive number of pixels, got {img_size}")
        nl, nc = detect.nl, detect.nc
        if hyp.balance is not None:
            balance = hyp.balance
        elif nl == 3:
            balance = _BALANCE_3_LEVELS
        else:
            balance = _BALANCE_OTHER[:nl]
        if len(balance) != nl:
            raise ValueError(f"LossHyp.balance needs one weight per level ({nl}), got {len(balance)}")
        self.detect = detect
        self.hyp = hyp
        self.balance = balance
        self.box_gain = hyp.box * 3 / nl
        self.cls_gain = hyp.cls * nc / 80 * 3 / nl
        self.obj_gain = hyp.obj * (img_size / 640) ** 2 * 3 / nl

    def __call__(self, maps: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """Loss of ``maps``, nl x (N, na, H, W, no) logits, for ``targets`` (M, 6) [img, cls, cx, cy, w, h].

        Returns ``(total, parts)``: the scalar to back-propagate, ``(box + obj + cls) * N``, and the
        detached ``(3,)`` ``[box, obj, cls]`` without the factor ``N``.
        """
        detect = self.detect
        if len(maps) != detect.nl:
            raise ValueError(f"expected {detect.nl} raw maps (one per Detect level), got {len(maps)}")
        if targets.ndim != 2 or targets.shape[1] != 6:
            raise ValueError(f"targets must be (M, 6) [img, cls, cx, cy, w, h], got {tuple(targets.shape)}")
        anchors = detect.anchors
        assert isinstance(anchors, Tensor)
        device = maps[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        anchors = anchors.to(device=device, dtype=torch.float32)
        positive = 1.0 - 0.5 * self.hyp.label_smoothing
        negative = 0.5 * self.hyp.label_smoothing

        zero = torch.zeros((), device=device, dtype=torch.float32)
        loss_box, loss_obj, loss_cls = zero, zero, zero
        for level, raw in enumerate(maps):
            n, na, ny, nx, _ = raw.shape
            assigned = assign_targets(targets, anchors[level], (ny, nx), self.hyp.anchor_t)
            obj_target = torch.zeros((n, na, ny, nx), device=device, dtype=raw.dtype)
            if assigned.image.numel():
                slot = (assigned.image, assigned.anchor, assigned.gy, assigned.gx)
                pred = raw[slot]  # (P, no)
                pred_xy = pred[:, :2].sigmoid() * 2 - 0.5
                pred_wh = (pred[:, 2:4].sigmoid() * 2) ** 2 * anchors[level][assigned.anchor]
                ciou = bbox_ciou(torch.cat((pred_xy, pred_wh), dim=1), assigned.box)
                loss_box = loss_box + (1.0 - ciou).mean()

                score = (1.0 - self.hyp.gr) + self.hyp.gr * ciou.detach().clamp(min=0)
                # Several targets may claim one slot; like YOLOv5 the last one wins, but deterministically.
                flat = ((assigned.image * na + assigned.anchor) * ny + assigned.gy) * nx + assigned.gx
                kept = _kept_by_last_write(flat, obj_target.numel())
                obj_target.view(-1)[flat[kept]] = score[kept].to(raw.dtype)

                if detect.nc > 1:
                    cls_logits = pred[:, 5:]
                    cls_target = torch.full_like(cls_logits, negative)
                    cls_target[torch.arange(len(cls_target), device=device), assigned.cls] = positive
                    loss_cls = loss_cls + F.binary_cross_entropy_with_logits(cls_logits, cls_target)
            loss_obj = loss_obj + F.binary_cross_entropy_with_logits(raw[..., 4], obj_target) * self.balance[level]

        loss_box = loss_box * self.box_gain
        loss_obj = loss_obj * self.obj_gain
        loss_cls = loss_cls * self.cls_gain
        batch_size = maps[0].shape[0]
        total = (loss_box + loss_obj + loss_cls) * batch_size
        return total, torch.stack((loss_box, loss_obj, loss_cls)).detach()

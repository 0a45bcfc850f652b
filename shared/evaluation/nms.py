"""Class-aware non-maximum suppression of decoded YOLOv5 outputs, with YOLOv5 v6.1's semantics."""

from __future__ import annotations

import torch
from torchvision.ops import nms


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Converts (K, 4) ``[cx, cy, w, h]`` boxes to (K, 4) ``[x1, y1, x2, y2]`` in the same unit."""
    half_wh = boxes[:, 2:4] / 2
    return torch.cat((boxes[:, 0:2] - half_wh, boxes[:, 0:2] + half_wh), dim=1)


def non_max_suppression(
    decoded: torch.Tensor,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    *,
    max_det: int = 300,
    multi_label: bool = True,
    max_nms: int = 30000,
    max_wh: int = 7680,
) -> list[torch.Tensor]:
    """Keeps the confident, non-overlapping detections of each image; the defaults are those of ``val.py``.

    ``decoded`` is the eval-mode model output (N, A, 5 + nc) ``[cx, cy, w, h, obj, cls_probs...]`` in input
    pixels, already sigmoided. Returns N tensors (K, 6) ``[x1, y1, x2, y2, conf, cls]`` where
    ``conf = obj * cls_prob``, in the order NMS keeps them (highest score first), at most ``max_det`` each.
    With ``multi_label`` a box yields one detection per class whose conf exceeds ``conf_thres``; otherwise
    only its best class does.
    """
    if decoded.ndim != 3 or decoded.shape[2] < 6:
        raise ValueError(f"decoded has shape {tuple(decoded.shape)}; expected (N, A, 5 + nc) with at least one class")
    if not 0.0 <= conf_thres <= 1.0 or not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"conf_thres={conf_thres} and iou_thres={iou_thres} must both lie in [0, 1]")
    return [
        _suppress_image(
            image,
            conf_thres=conf_thres,
            iou_thres=iou_thres,
            max_det=max_det,
            multi_label=multi_label,
            max_nms=max_nms,
            max_wh=max_wh,
        )
        for image in decoded
    ]


def suppress_for_display(
    decoded: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 1000
) -> list[torch.Tensor]:
    """Non-max suppression with ``detect.py``'s defaults: fewer, surer boxes, best class only, for drawing."""
    return non_max_suppression(decoded, conf_thres, iou_thres, max_det=max_det, multi_label=False)


def _suppress_image(
    image: torch.Tensor,
    *,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    multi_label: bool,
    max_nms: int,
    max_wh: int,
) -> torch.Tensor:
    """NMS of one image's (A, 5 + nc) predictions into (K, 6) ``[x1, y1, x2, y2, conf, cls]``."""
    candidates = image[image[:, 4] > conf_thres]
    if candidates.shape[0] == 0:
        return torch.zeros((0, 6), device=image.device)
    class_conf = candidates[:, 5:] * candidates[:, 4:5]
    boxes = cxcywh_to_xyxy(candidates[:, :4])
    if multi_label:
        box_index, cls = (class_conf > conf_thres).nonzero(as_tuple=True)
        # The class column is float32 as in v6.1, which also lifts half-precision rows to float32 so that
        # the class offsets below cannot overflow.
        detections = torch.cat((boxes[box_index], class_conf[box_index, cls, None], cls[:, None].float()), dim=1)
    else:
        conf, cls = class_conf.max(dim=1, keepdim=True)
        detections = torch.cat((boxes, conf, cls.float()), dim=1)[conf.view(-1) > conf_thres]
    if detections.shape[0] == 0:
        return torch.zeros((0, 6), device=image.device)
    if detections.shape[0] > max_nms:
        detections = detections[detections[:, 4].argsort(descending=True)[:max_nms]]
    # Shifting each class into its own far-apart region makes one class-agnostic NMS call class-aware.
    offsets = detections[:, 5:6] * max_wh
    keep: torch.Tensor = nms(detections[:, :4] + offsets, detections[:, 4], iou_thres)
    return detections[keep[:max_det]]

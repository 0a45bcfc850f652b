"""Evaluating a model on a labelled folder, through the full model or the deployed split pipeline.

Predictions are mapped back to each original image and compared with its labels there, as YOLOv5's
validation does (conf 0.001, IoU 0.6, max 300 detections, multi-label NMS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from shared.dataset.letterbox import boxes_to_original, labels_to_original_xyxy
from shared.dataset.loader import Batch
from shared.evaluation.metrics import DetectionMetrics, MetricsAccumulator
from shared.evaluation.nms import non_max_suppression
from shared.yolo.network import YoloSegment, split_model

Encoding = Literal["none", "bits"]
#: images (N, 3, H, W) float32 -> decoded predictions (N, A, 5 + nc)
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NmsSettings:
    """Post-processing of YOLOv5's validation."""

    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300


def decoded(out: object) -> torch.Tensor:
    """The decoded predictions of an eval-mode model's output ``(decoded, maps)``."""
    assert isinstance(out, tuple) and isinstance(out[0], torch.Tensor), "model must be in eval mode"
    return out[0]


def build_predictor(model: YoloSegment, cut_layer: int | None = None, encoding: Encoding = "none") -> Predictor:
    """Full model, or edge part -> (bits ``x > 0`` if ``encoding == 'bits'``) -> cloud part, without noise."""
    model.eval()
    if cut_layer is None:
        if encoding != "none":
            raise ValueError("--encoding bits needs --cut-layer: bits are what crosses the cut")

        def full(images: torch.Tensor) -> torch.Tensor:
            return decoded(model(images))

        return full
    edge, cloud = split_model(model, cut_layer)
    cloud.eval()

    def split(images: torch.Tensor) -> torch.Tensor:
        features = edge.extract(images)
        if encoding == "bits":
            features = (features > 0).to(features.dtype)
        return decoded(cloud(features))

    return split


@torch.inference_mode()
def evaluate_batches(
    predict: Predictor,
    batches: Iterable[Batch],
    nms: NmsSettings = NmsSettings(),
    progress: Callable[[int], None] | None = None,
) -> DetectionMetrics:
    """Metrics of ``predict`` over ``batches`` of labelled images, in original-image coordinates."""
    acc = MetricsAccumulator()
    for batch in batches:
        detections = non_max_suppression(predict(batch.images), nms.conf_thres, nms.iou_thres, max_det=nms.max_det)
        for det, box, labels in zip(detections, batch.letterboxes, batch.labels, strict=True):
            det_np = det.cpu().numpy()
            det_np[:, :4] = boxes_to_original(det_np[:, :4], box)
            truth = np.concatenate([labels[:, :1], labels_to_original_xyxy(labels, box)], axis=1)
            acc.add_image(det_np, truth)
        if progress is not None:
            progress(len(batch.samples))
    return acc.result()


@torch.inference_mode()
def evaluate_features(
    cloud: YoloSegment,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    img_size: int,
    nms: NmsSettings = NmsSettings(),
) -> DetectionMetrics:
    """Metrics of the cloud part on released features: ``(features (N,C,H,W), targets (M,6))`` pairs.

    The edges' letterboxed geometry is all the cloud knows, so boxes are compared in input pixels.
    """
    cloud.eval()
    acc = MetricsAccumulator()
    for features, targets in batches:
        detections = non_max_suppression(decoded(cloud(features)), nms.conf_thres, nms.iou_thres, max_det=nms.max_det)
        t = targets.cpu().numpy()
        for index, det in enumerate(detections):
            rows = t[t[:, 0] == index]
            xy, wh = rows[:, 2:4] * img_size, rows[:, 4:6] * img_size
            truth = np.concatenate([rows[:, 1:2], xy - wh / 2, xy + wh / 2], axis=1)
            acc.add_image(det.cpu().numpy(), truth)
    return acc.result()

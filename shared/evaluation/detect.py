"""Detections of one image through a predictor (full model or deployed split), in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.dataset.letterbox import boxes_to_original, letterbox
from shared.dataset.loader import images_to_tensor
from shared.evaluation.evaluate import Predictor
from shared.evaluation.nms import suppress_for_display


@dataclass(frozen=True)
class Detection:
    """One box: class index and name, confidence (obj x class probability), ``[x1, y1, x2, y2]`` pixels."""

    cls: int
    name: str
    conf: float
    xyxy: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, object]:
        return {
            "cls": self.cls,
            "name": self.name,
            "conf": round(self.conf, 4),
            "xyxy": [round(v, 1) for v in self.xyxy],
        }


@torch.inference_mode()
def detect_image(
    predict: Predictor,
    image: np.ndarray,
    img_size: int,
    names: list[str],
    *,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 1000,
) -> list[Detection]:
    """Detections in ``(H, W, 3) uint8`` BGR ``image``, letterboxed square to ``img_size`` as deployed,
    with ``detect.py``'s post-processing; best first."""
    boxed, box = letterbox(image, img_size)
    predictions = predict(images_to_tensor([boxed]))
    found = suppress_for_display(predictions, conf_thres, iou_thres, max_det)[0].cpu().numpy()
    xyxy = boxes_to_original(found[:, :4], box)
    result = []
    for (x1, y1, x2, y2), conf, cls in zip(xyxy.tolist(), found[:, 4].tolist(), found[:, 5].tolist(), strict=True):
        index = int(cls)
        name = names[index] if 0 <= index < len(names) else str(index)
        result.append(Detection(index, name, float(conf), (x1, y1, x2, y2)))
    return result

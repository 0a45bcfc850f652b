"""Drawing labelled detection boxes on an image with OpenCV."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from shared.evaluation.detect import Detection

# Ultralytics' palette (BGR), so our images look like the ones users know.
_PALETTE_HEX = (
    "FF3838",
    "FF9D97",
    "FF701F",
    "FFB21D",
    "CFD231",
    "48F90A",
    "92CC17",
    "3DDB86",
    "1A9334",
    "00D4BB",
    "2C99A8",
    "00C2FF",
    "344593",
    "6473FF",
    "0018EC",
    "8438FF",
    "520085",
    "CB38FF",
    "FF95C8",
    "FF37C7",
)
PALETTE = [(int(h[4:6], 16), int(h[2:4], 16), int(h[0:2], 16)) for h in _PALETTE_HEX]


def colour(cls: int) -> tuple[int, int, int]:
    return PALETTE[cls % len(PALETTE)]


def draw_detections(image: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """A copy of ``(H, W, 3) uint8`` BGR ``image`` with each box and a ``name conf`` label drawn on it."""
    canvas = image.copy()
    thickness = max(round(sum(canvas.shape[:2]) / 2 * 0.003), 2)
    font_scale = thickness / 3
    for det in detections:
        x1, y1, x2, y2 = (round(v) for v in det.xyxy)
        col = colour(det.cls)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), col, thickness, lineType=cv2.LINE_AA)
        label = f"{det.name} {det.conf:.2f}"
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(thickness - 1, 1))
        above = y1 - h - 3 >= 0
        top = y1 - h - 3 if above else y1
        cv2.rectangle(canvas, (x1, top), (x1 + w, top + h + 3), col, -1, lineType=cv2.LINE_AA)
        cv2.putText(
            canvas,
            label,
            (x1, top + h + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            max(thickness - 1, 1),
            lineType=cv2.LINE_AA,
        )
    return canvas

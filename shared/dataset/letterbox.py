"""YOLOv5 v6.x validation preprocessing: read, resize, pad to a shape, and map boxes across it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from shared.dataset.sources import DatasetError

PAD_VALUE = 114
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Letterbox:
    """How original pixels map to output pixels: ``out = orig * ratio + pad``.

    ``pad`` is ``(left, top)`` as computed (may be fractional; the border drawn is rounded around it);
    ``orig_shape`` and ``shape`` are ``(h, w)`` of the input and output images.
    """

    ratio: float
    pad: tuple[float, float]
    orig_shape: tuple[int, int]
    shape: tuple[int, int]


def read_image(path: Path) -> np.ndarray:
    """The image at ``path`` as ``(H, W, 3) uint8`` BGR (grayscale is expanded to three channels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        reason = "does not exist" if not path.is_file() else "is not an image OpenCV can decode"
        raise DatasetError(f"image {path} cannot be read: it {reason}")
    return np.asarray(image, dtype=np.uint8)


def letterbox(image: np.ndarray, shape: tuple[int, int] | int) -> tuple[np.ndarray, Letterbox]:
    """Resize and pad ``(H0, W0, 3) uint8`` to ``shape`` (h, w) exactly as YOLOv5 v6.x validation does.

    First the long side is scaled to ``max(shape)`` (INTER_AREA down, INTER_LINEAR up), then the result
    is shrunk (never enlarged) to fit ``shape`` and centred on a border of 114 grey.
    """
    out_h, out_w = (shape, shape) if isinstance(shape, int) else shape
    h0, w0 = image.shape[:2]
    img_size = max(out_h, out_w)
    load_ratio = img_size / max(h0, w0)
    if load_ratio != 1:
        interp = cv2.INTER_AREA if load_ratio < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (int(w0 * load_ratio), int(h0 * load_ratio)), interpolation=interp)
    h, w = image.shape[:2]
    fit_ratio = min(out_h / h, out_w / w, 1.0)
    unpad_w, unpad_h = round(w * fit_ratio), round(h * fit_ratio)
    pad_w, pad_h = (out_w - unpad_w) / 2, (out_h - unpad_h) / 2
    if (w, h) != (unpad_w, unpad_h):
        image = cv2.resize(image, (unpad_w, unpad_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    grey = (PAD_VALUE, PAD_VALUE, PAD_VALUE)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=grey)
    assert image.shape[:2] == (out_h, out_w), (image.shape, shape)
    box = Letterbox(load_ratio * fit_ratio, (pad_w, pad_h), (h0, w0), (out_h, out_w))
    return image, box


def labels_to_original_xyxy(labels: np.ndarray, where: Letterbox | tuple[int, int]) -> np.ndarray:
    """``(M, 5) [cls, cx, cy, w, h]`` normalised → ``(M, 4) float32`` pixel xyxy clipped to the original.

    ``where`` is the image's Letterbox or its original ``(h, w)``.
    """
    h0, w0 = where.orig_shape if isinstance(where, Letterbox) else where
    cx, cy, w, h = (labels[:, i].astype(np.float64) for i in range(1, 5))
    xyxy = np.stack([(cx - w / 2) * w0, (cy - h / 2) * h0, (cx + w / 2) * w0, (cy + h / 2) * h0], axis=1)
    return _clip(xyxy, w0, h0).astype(np.float32)


def labels_to_letterbox(labels: np.ndarray, box: Letterbox) -> np.ndarray:
    """``(M, 5)`` labels normalised to the original → ``(M, 5) float32`` normalised to the output.

    Boxes are first clipped to the original image, so none reaches into the padding.
    """
    xyxy = labels_to_original_xyxy(labels, box).astype(np.float64) * box.ratio
    xyxy[:, 0::2] += box.pad[0]
    xyxy[:, 1::2] += box.pad[1]
    out_h, out_w = box.shape
    result = np.empty((len(labels), 5), dtype=np.float32)
    result[:, 0] = labels[:, 0]
    result[:, 1] = (xyxy[:, 0] + xyxy[:, 2]) / 2 / out_w
    result[:, 2] = (xyxy[:, 1] + xyxy[:, 3]) / 2 / out_h
    result[:, 3] = (xyxy[:, 2] - xyxy[:, 0]) / out_w
    result[:, 4] = (xyxy[:, 3] - xyxy[:, 1]) / out_h
    return result


def boxes_to_original(xyxy: np.ndarray, box: Letterbox) -> np.ndarray:
    """``(K, 4)`` xyxy in output pixels → ``(K, 4) float32`` xyxy in original pixels, clipped to it."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, 0::2] -= box.pad[0]
    boxes[:, 1::2] -= box.pad[1]
    boxes /= box.ratio
    h0, w0 = box.orig_shape
    return _clip(boxes, w0, h0).astype(np.float32)


def _clip(xyxy: np.ndarray, width: float, height: float) -> np.ndarray:
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    return xyxy


def rect_batch_shapes(
    orig_shapes: list[tuple[int, int]],
    img_size: int,
    batch_size: int,
    stride: int = 32,
    pad: float = 0.5,
) -> tuple[list[int], list[tuple[int, int]]]:
    """YOLOv5 val.py rectangular batching: image order and one ``(h, w)`` shape per batch.

    Images (original ``(h, w)``) are sorted by aspect ratio ``h / w`` (stable, so ties keep their
    order); each run of ``batch_size`` shares the smallest stride multiple that holds its widest or
    tallest member at ``img_size`` plus ``pad`` strides.
    """
    if not orig_shapes:
        return [], []
    aspect = np.array([h / w for h, w in orig_shapes], dtype=np.float64)
    order = np.argsort(aspect, kind="stable")
    aspect = aspect[order]
    shapes = []
    for start in range(0, len(aspect), batch_size):
        run = aspect[start : start + batch_size]
        low, high = float(run.min()), float(run.max())
        scale_h, scale_w = (high, 1.0) if high < 1 else (1.0, 1 / low) if low > 1 else (1.0, 1.0)
        shapes.append(
            (
                math.ceil(scale_h * img_size / stride + pad) * stride,
                math.ceil(scale_w * img_size / stride + pad) * stride,
            )
        )
    return [int(i) for i in order], shapes


def read_image_shape(path: Path) -> tuple[int, int]:
    """The ``(h, w)`` that :func:`read_image` will return, read from the header when possible.

    EXIF orientations that turn the picture by 90 degrees swap h and w, as OpenCV applies them.
    """
    try:
        with PIL.Image.open(path) as image:
            w, h = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in {5, 6, 7, 8}
        return (w, h) if turned else (h, w)
    except (OSError, ValueError, SyntaxError):
        # Pillow does not know every format OpenCV reads; decode fully (this also reports real damage).
        shape = read_image(path).shape
        return shape[0], shape[1]

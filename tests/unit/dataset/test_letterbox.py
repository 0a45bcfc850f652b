"""Tests of shared.dataset.letterbox: YOLOv5 validation resizing, padding and box mapping."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import pytest

from shared.dataset.letterbox import (
    Letterbox,
    boxes_to_original,
    labels_to_letterbox,
    labels_to_original_xyxy,
    letterbox,
    read_image,
    read_image_shape,
    rect_batch_shapes,
)
from shared.dataset.sources import DatasetError


def image_with_box(h: int, w: int, xyxy: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A black (h, w) image with a white filled rectangle, and its (1, 5) normalised label."""
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = xyxy
    image[y1:y2, x1:x2] = 255
    label = np.array([[7, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]], np.float32)
    return image, label


def bright_extent(image: np.ndarray) -> tuple[int, int, int, int]:
    """xyxy (exclusive end) of the pixels brighter than mid-grey."""
    ys, xs = np.nonzero(image[..., 0] > 180)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class TestReadImage:
    """Images come back as (H, W, 3) uint8 BGR; unreadable files raise naming the file."""

    def test_grayscale_becomes_three_channels(self, tmp_path: Path) -> None:
        path = tmp_path / "g.png"
        cv2.imwrite(str(path), np.full((5, 7), 9, np.uint8))
        image = read_image(path)
        assert image.shape == (5, 7, 3)
        assert image.dtype == np.uint8
        assert (image == 9).all()

    def test_corrupt_file_names_it(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.jpg"
        path.write_bytes(b"\xff\xd8 not really a jpeg")
        with pytest.raises(DatasetError, match=r"image .*broken\.jpg cannot be read: it is not an image"):
            read_image(path)

    def test_missing_file_names_it(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match=r"gone\.png cannot be read: it does not exist"):
            read_image(tmp_path / "gone.png")


class TestReadImageShape:
    """The header shape matches what read_image decodes, EXIF rotation included."""

    def test_exif_rotated_jpeg(self, tmp_path: Path) -> None:
        path = tmp_path / "rot.jpg"
        picture = PIL.Image.fromarray(np.zeros((20, 40, 3), np.uint8))
        exif = picture.getexif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise on display
        picture.save(path, exif=exif)
        assert read_image_shape(path) == read_image(path).shape[:2] == (40, 20)


class TestLetterbox:
    """Output has exactly the asked shape, 114 borders and the YOLOv5 ratio and padding."""

    @pytest.mark.parametrize(
        ("orig", "shape", "ratio", "pad", "content"),
        [
            # landscape, shrunk with INTER_AREA, padded top and bottom
            ((100, 200), 64, 0.32, (0.0, 16.0), (0, 16, 64, 48)),
            # portrait; int(40 * 0.64) = 25 columns, odd padding 19 left / 20 right
            ((100, 40), 64, 0.64, (19.5, 0.0), (19, 0, 44, 64)),
            # small image, upscaled by the first step: 30 * 64/30 = 64, int(20 * 64/30) = 42 rows
            ((20, 30), 64, 64 / 30, (0.0, 11.0), (0, 11, 64, 53)),
            # portrait into a landscape shape: long side to 64, then 32/64 to fit; round(12.5) = 12
            ((100, 40), (32, 64), 0.32, (26.0, 0.0), (26, 0, 38, 32)),
        ],
    )
    def test_geometry(
        self,
        orig: tuple[int, int],
        shape: int | tuple[int, int],
        ratio: float,
        pad: tuple[float, float],
        content: tuple[int, int, int, int],
    ) -> None:
        image = np.full((*orig, 3), 200, np.uint8)
        out, box = letterbox(image, shape)
        out_shape = (shape, shape) if isinstance(shape, int) else shape
        assert out.shape == (*out_shape, 3)
        assert out.dtype == np.uint8
        assert box.ratio == pytest.approx(ratio)
        assert (box.pad, box.orig_shape, box.shape) == (pad, orig, out_shape)
        x1, y1, x2, y2 = content
        assert (out[y1:y2, x1:x2] == 200).all()
        border = np.ones(out_shape, bool)
        border[y1:y2, x1:x2] = False
        assert border.any() == (content != (0, 0, *out_shape[::-1]))
        assert (out[border] == 114).all()

    def test_same_size_is_untouched(self) -> None:
        image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        out, box = letterbox(image, 64)
        np.testing.assert_array_equal(out, image)
        assert box == Letterbox(1.0, (0.0, 0.0), (64, 64), (64, 64))


class TestBoxMapping:
    """A box drawn on the image lands where labels_to_letterbox says and maps back within 1 px."""

    @pytest.mark.parametrize(
        ("orig", "xyxy", "shape"),
        [
            ((300, 500), (40, 100, 260, 220), 128),  # landscape, shrunk
            ((500, 180), (20, 50, 140, 480), 128),  # portrait, odd padding
            ((45, 70), (10, 5, 60, 30), 128),  # small, upscaled
            ((500, 180), (20, 50, 140, 480), (96, 160)),  # rectangular output
        ],
    )
    def test_round_trip(
        self, orig: tuple[int, int], xyxy: tuple[int, int, int, int], shape: int | tuple[int, int]
    ) -> None:
        image, label = image_with_box(*orig, xyxy)
        out, box = letterbox(image, shape)
        target = labels_to_letterbox(label, box)
        assert target.dtype == np.float32
        assert target[0, 0] == 7
        out_h, out_w = box.shape
        cx, cy, w, h = target[0, 1:]
        predicted = np.array([[(cx - w / 2) * out_w, (cy - h / 2) * out_h, (cx + w / 2) * out_w, (cy + h / 2) * out_h]])
        np.testing.assert_allclose(predicted[0], bright_extent(out), atol=1.0)
        np.testing.assert_allclose(boxes_to_original(predicted, box)[0], xyxy, atol=1.0)
        np.testing.assert_allclose(labels_to_original_xyxy(label, box)[0], xyxy, atol=1e-3)

    def test_clips_to_the_original_image(self) -> None:
        label = np.array([[0, 0.05, 0.5, 0.3, 0.2]], np.float32)  # reaches 0.1 past the left edge
        box = Letterbox(0.5, (0.0, 25.0), (100, 200), (100, 100))
        np.testing.assert_allclose(labels_to_original_xyxy(label, (100, 200)), [[0, 40, 40, 60]], atol=1e-4)
        np.testing.assert_allclose(labels_to_letterbox(label, box), [[0, 0.1, 0.5, 0.2, 0.1]], atol=1e-6)
        far = np.array([[-30.0, 10.0, 500.0, 90.0]])
        np.testing.assert_allclose(boxes_to_original(far, box), [[0, 0, 200, 100]])

    def test_empty(self) -> None:
        box = Letterbox(1.0, (0.0, 0.0), (8, 8), (8, 8))
        assert labels_to_letterbox(np.zeros((0, 5), np.float32), box).shape == (0, 5)
        assert boxes_to_original(np.zeros((0, 4)), box).shape == (0, 4)


class TestRectBatchShapes:
    """Images sort by h/w; each batch gets the stride multiple YOLOv5 val.py computes."""

    def test_mixed_batches(self) -> None:
        shapes = [(480, 640), (640, 480), (640, 640), (427, 640), (640, 427), (500, 375)]
        order, batch_shapes = rect_batch_shapes(shapes, img_size=640, batch_size=2)
        # h/w: 0.75, 1.333, 1, 0.667, 1.499, 1.333 (stable: index 1 before 5)
        assert order == [3, 0, 2, 1, 5, 4]
        # [0.75, 1] -> ceil(15.5), ceil(20.5); [1, 1]; [1, 1/1.333] -> ceil(20.5), ceil(15.5)
        assert batch_shapes == [(512, 672), (672, 672), (672, 512)]

    def test_no_padding_and_smaller_stride(self) -> None:
        order, batch_shapes = rect_batch_shapes([(300, 400), (200, 400)], 320, 4, stride=16, pad=0.0)
        assert order == [1, 0]
        assert batch_shapes == [(240, 320)]  # max h/w 0.75 * 320 = 240

    def test_empty(self) -> None:
        assert rect_batch_shapes([], 640, 4) == ([], [])

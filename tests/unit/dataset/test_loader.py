"""Tests of shared.dataset.loader: batches, targets, rectangular order, errors and prefetch."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from shared.dataset import loader
from shared.dataset.letterbox import Letterbox
from shared.dataset.loader import PREFETCH_BATCHES, Batch, images_to_tensor, iter_batches
from shared.dataset.sources import DatasetError, Sample, discover


def make_dataset(root: Path, shapes: list[tuple[int, int]], boxes_per_image: list[int]) -> list[Sample]:
    """Images ``im{i}.png`` of the given (h, w), each filled with grey level 10*i, with n boxes (0: none)."""
    for i, ((h, w), n) in enumerate(zip(shapes, boxes_per_image, strict=True)):
        images = root / "images"
        images.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / f"im{i}.png"), np.full((h, w, 3), 10 * i, np.uint8))
        if n:
            labels = root / "labels"
            labels.mkdir(exist_ok=True)
            rows = "".join(f"{i} 0.5 0.5 0.{k + 1} 0.{k + 1}\n" for k in range(n))
            (labels / f"im{i}.txt").write_text(rows)
    return discover(root)


class TestImagesToTensor:
    """BGR HWC uint8 images become one contiguous RGB NCHW float32 tensor in [0, 1]."""

    def test_layout(self) -> None:
        image = np.zeros((2, 3, 3), np.uint8)
        image[..., 0] = 255  # blue in BGR
        image[0, 1, 2] = 51  # some red in one pixel
        tensor = images_to_tensor([image, image])
        assert tensor.shape == (2, 3, 2, 3)
        assert tensor.dtype == torch.float32
        assert tensor.is_contiguous()
        assert (tensor[:, 2] == 1).all()  # blue is the last RGB channel
        assert tensor[1, 0, 0, 1].item() == pytest.approx(0.2)


class TestIterBatches:
    """Square batches keep sample order and tag each target with its image's index in the batch."""

    def test_square(self, tmp_path: Path) -> None:
        samples = make_dataset(tmp_path, [(40, 60), (60, 40), (32, 32), (20, 50), (64, 64)], [2, 0, 1, 3, 1])
        done: list[int] = []
        batches = list(iter_batches(samples, 32, 2, progress=done.append))
        assert [len(b.samples) for b in batches] == [2, 2, 1]
        assert [s for b in batches for s in b.samples] == samples
        assert done == [2, 4, 5]
        first, second = batches[0], batches[1]
        assert first.images.shape == (2, 3, 32, 32)
        assert first.images.dtype == torch.float32
        # im0 has 2 boxes, im1 is a background; im2 has 1 and im3 has 3.
        assert first.targets[:, 0].tolist() == [0, 0]
        assert second.targets[:, 0].tolist() == [0, 1, 1, 1]
        assert second.targets[:, 1].tolist() == [2, 3, 3, 3]  # classes were written as the image number
        assert first.targets.shape[1] == 6
        assert [len(labels) for labels in second.labels] == [1, 3]
        assert first.letterboxes[0] == Letterbox(32 / 60, (0.0, 5.5), (40, 60), (32, 32))
        # Image 1 (grey 10, 60x40) keeps its level in the middle and gets 114 in the side padding.
        assert first.images[1, :, 16, 16].tolist() == pytest.approx([10 / 255] * 3)
        assert first.images[1, 0, 16, 0].item() == pytest.approx(114 / 255)

    def test_targets_are_normalised_to_the_letterbox(self, tmp_path: Path) -> None:
        samples = make_dataset(tmp_path, [(50, 100)], [1])  # one box 0.1 x 0.1 centred
        (batch,) = iter_batches(samples, 64, 1)
        # 100x50 -> 64x32 content with 16 px padding above and below: height fraction halves.
        np.testing.assert_allclose(batch.targets[0].numpy(), [0, 0, 0.5, 0.5, 0.1, 0.05], atol=1e-6)

    def test_rect_order_and_shapes(self, tmp_path: Path) -> None:
        shapes = [(64, 32), (32, 64), (48, 64), (64, 64)]  # h/w: 2, 0.5, 0.75, 1
        samples = make_dataset(tmp_path, shapes, [1, 1, 1, 1])
        batches = list(iter_batches(samples, 64, 2, rect=True))
        names = [[s.image.name for s in b.samples] for b in batches]
        assert names == [["im1.png", "im2.png"], ["im3.png", "im0.png"]]
        assert [tuple(b.images.shape[2:]) for b in batches] == [(64, 96), (96, 96)]
        # each target row's class is its image's number, so the index must point at that image
        for b in batches:
            for row in b.targets.tolist():
                assert b.samples[int(row[0])].image.name == f"im{int(row[1])}.png"

    def test_bad_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="must all be at least 1"):
            iter_batches([], 64, 0)


class TestErrors:
    """A bad sample raises naming its file, or is logged and dropped with on_error='skip'."""

    @pytest.fixture
    def samples(self, tmp_path: Path) -> list[Sample]:
        samples = make_dataset(tmp_path, [(16, 16)] * 4, [1, 1, 1, 1])
        (tmp_path / "images" / "im1.png").write_bytes(b"garbage")
        (tmp_path / "labels" / "im2.txt").write_text("0 0.5 0.5 0.1\n")
        return samples

    def test_raise(self, samples: list[Sample]) -> None:
        with pytest.raises(DatasetError, match=r"im1\.png cannot be read"):
            list(iter_batches(samples, 16, 4))

    @pytest.mark.parametrize("rect", [False, True])
    def test_skip(self, samples: list[Sample], rect: bool, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="shared.dataset.loader"):
            batches = list(iter_batches(samples, 16, 4, rect=rect, on_error="skip"))
        assert [s.image.name for b in batches for s in b.samples] == ["im0.png", "im3.png"]
        assert batches[0].targets[:, 0].tolist() == [0, 1]
        skipped = {Path(r.__dict__["image_path"]).name: r.__dict__["reason"] for r in caplog.records}
        assert set(skipped) == {"im1.png", "im2.png"}
        assert "cannot be read" in skipped["im1.png"]
        assert "im2.txt line 1 has 4 fields" in skipped["im2.png"]

    def test_class_beyond_num_classes(self, tmp_path: Path) -> None:
        samples = make_dataset(tmp_path, [(8, 8), (8, 8)], [1, 1])  # classes 0 and 1
        with pytest.raises(DatasetError, match=r"im1\.txt line 1 has class 1: expected below the 1 classes"):
            list(iter_batches(samples, 8, 2, num_classes=1))

    def test_all_skipped_yields_nothing(self, tmp_path: Path) -> None:
        samples = make_dataset(tmp_path, [(8, 8)], [0])
        samples[0].image.write_bytes(b"")
        assert list(iter_batches(samples, 8, 1, on_error="skip")) == []


class TestPrefetch:
    """While the consumer holds a batch, at most PREFETCH_BATCHES further batches are decoded."""

    def test_bounded(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        samples = make_dataset(tmp_path, [(8, 8)] * 10, [0] * 10)
        started: list[Sample] = []
        real_load = loader._load

        def counting_load(sample: Sample, shape: tuple[int, int], num_classes: int | None) -> object:
            started.append(sample)
            return real_load(sample, shape, num_classes)

        monkeypatch.setattr(loader, "_load", counting_load)
        batches = iter_batches(samples, 8, 1, workers=2)
        first: Batch = next(batches)
        expected = 1 + PREFETCH_BATCHES
        deadline = time.monotonic() + 5
        while len(started) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # give an unbounded loader the chance to run further
        assert len(started) == expected
        assert first.samples == samples[:1]
        assert len(list(batches)) == 9

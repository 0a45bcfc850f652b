"""Tests of producers.edge.extract: bits match the extractor, skips are reported with their reason."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from producers.edge.extract import activation_bits, extract_pieces
from producers.edge.intake import Candidate
from shared.dataset.loader import iter_batches
from shared.dataset.sources import DatasetError, discover
from shared.yolo.network import EdgeExtractor
from shared.yolo.table import build_arch


def tiny_extractor() -> EdgeExtractor:
    torch.manual_seed(0)
    return EdgeExtractor(build_arch("yolov5n"), 1)  # one conv: fast


def candidates(root: Path, bad: set[int], count: int = 5) -> list[Candidate]:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(count):
        path = root / "images" / f"im{i}.png"
        if i in bad:
            path.write_bytes(b"broken")
        else:
            cv2.imwrite(str(path), np.full((40, 48, 3), 20 * i, np.uint8))
        (root / "labels" / f"im{i}.txt").write_text(f"{i} 0.5 0.5 0.2 0.2\n")
    return [Candidate(s, f"{i:064x}", f"{i:032x}", "train", "sig") for i, s in enumerate(discover(root))]


class TestExtractPieces:
    """Bits match the extractor; with skip, unreadable images are reported with their reason, none lost."""

    def test_bits_and_skips(self, tmp_path: Path) -> None:
        group = candidates(tmp_path, bad={1, 4})
        extractor = tiny_extractor()
        items = list(
            extract_pieces(
                [group], extractor, img_size=32, chunk=2, on_error="skip", workers=1, num_classes=80,
                stop=threading.Event(),
            )
        )  # fmt: skip
        released = [c.digest for item in items for c in item.released]
        skipped = [(c.digest, reason) for item in items for c, reason in item.skipped]
        assert released == [group[i].digest for i in (0, 2, 3)]
        assert [d for d, _ in skipped] == [group[1].digest, group[4].digest]
        assert all("cannot be read" in reason and "im" in reason for _, reason in skipped)
        # Pieces [0, 1] and [2, 3]; [4] held nothing readable, so its skip comes with the group's end.
        assert [len(item.released) for item in items] == [1, 2, 0]
        assert [item.last_of_group for item in items] == [False, False, True]
        assert [[c.digest for c, _ in item.skipped] for item in items] == [[group[1].digest], [], [group[4].digest]]
        second = items[1]
        assert second.bits is not None and second.bits.shape == (2, 16, 16, 16)
        np.testing.assert_array_equal(second.targets[:, :2], [[0, 2], [1, 3]])  # [img in piece, class = file number]

    def test_error_mode_raises(self, tmp_path: Path) -> None:
        group = candidates(tmp_path, bad={2})
        stream = extract_pieces(
            [group], tiny_extractor(), img_size=32, chunk=2, on_error="raise", workers=1, num_classes=80,
            stop=threading.Event(),
        )  # fmt: skip
        assert len(next(stream).released) == 2
        with pytest.raises(DatasetError, match=r"im2\.png"):
            next(stream)

    def test_uint8_input_is_the_loader_float(self) -> None:
        extractor = tiny_extractor()
        images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
        bits = activation_bits(extractor, images)
        assert bits.dtype == np.bool_ and bits.shape == (3, 16, 16, 16)
        np.testing.assert_array_equal(bits, (extractor.extract(images.float() / 255) > 0).numpy())

    def test_uint8_batches_convert_to_the_float_batches(self, tmp_path: Path) -> None:
        """The loader's uint8 mode, converted as activation_bits does, is bit-identical to its float mode."""
        samples = [c.sample for c in candidates(tmp_path, bad=set(), count=3)]
        [as_float] = list(iter_batches(samples, 32, 3))
        [as_uint8] = list(iter_batches(samples, 32, 3, uint8=True))
        assert as_uint8.images.dtype == torch.uint8
        assert torch.equal(as_uint8.images.float().div_(255.0), as_float.images)

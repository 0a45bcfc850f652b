"""The edge's extractor on every device present (CPU always; CUDA when there is one), and its threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from producers.edge.extract import activation_bits, extract_pieces, extract_workers, prepare_extractor
from producers.edge.intake import Candidate
from shared.dataset.sources import discover
from shared.yolo.network import EdgeExtractor
from shared.yolo.table import build_arch

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def extractor() -> EdgeExtractor:
    torch.manual_seed(0)
    return EdgeExtractor(build_arch("yolov5n"), 2)


@pytest.fixture
def _threads() -> Iterator[None]:
    """prepare_extractor sets torch's thread count; put it back for the tests that follow."""
    count = torch.get_num_threads()
    yield
    torch.set_num_threads(count)


@pytest.mark.usefixtures("_threads")
@pytest.mark.parametrize("device", DEVICES)
class TestDevicePath:
    """uint8 images cross to the extractor's device and come back as the bits a plain float32 run gives."""

    def test_bits_match_the_reference(self, device: str) -> None:
        images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
        reference = (extractor().extract(images.float() / 255) > 0).numpy()
        prepared = prepare_extractor(extractor(), torch.device(device))
        bits = activation_bits(prepared, images)
        assert bits.dtype == np.bool_ and bits.shape == reference.shape and bits.flags.c_contiguous
        # The same bits, but for activations within float rounding of 0 (none at all on a CPU here).
        assert (bits != reference).mean() < (1e-4 if device == "cuda" else 1e-9)

    def test_workers(self, device: str) -> None:
        prepared = prepare_extractor(extractor(), torch.device(device))
        assert extract_workers(prepared, 3) == 3
        assert extract_workers(prepared) == (1 if device == "cuda" else min(len(_cores()), 8))
        if device == "cpu":
            assert torch.get_num_threads() == max(1, len(_cores()) // extract_workers(prepared))


def _cores() -> set[int]:
    return os.sched_getaffinity(0)


@pytest.mark.usefixtures("_threads")
class TestParallelExtraction:
    """With several extractor threads, pieces keep their order and their bits; skips stay with their window."""

    def test_same_as_one_thread(self, tmp_path: Path) -> None:
        (tmp_path / "images").mkdir()
        (tmp_path / "labels").mkdir()
        for i in range(7):
            path = tmp_path / "images" / f"im{i}.png"
            if i == 3:
                path.write_bytes(b"broken")
            else:
                cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8))
            (tmp_path / "labels" / f"im{i}.txt").write_text(f"{i} 0.5 0.5 0.2 0.2\n")
        group = [Candidate(s, f"{i:064x}", f"{i:032x}", "train", "sig") for i, s in enumerate(discover(tmp_path))]
        model = prepare_extractor(extractor(), torch.device("cpu"), 3)
        runs = [
            list(
                extract_pieces(
                    [group],
                    model,
                    img_size=32,
                    chunk=2,
                    on_error="skip",
                    workers=2,
                    num_classes=80,
                    stop=threading.Event(),
                    extractors=extractors,
                )
            )
            for extractors in (1, 3)
        ]
        one, three = runs
        assert [[c.digest for c in p.released] for p in one] == [[c.digest for c in p.released] for p in three]
        assert [[c.digest for c, _ in p.skipped] for p in one] == [[c.digest for c, _ in p.skipped] for p in three]
        for a, b in zip(one, three, strict=True):
            assert (a.bits is None) == (b.bits is None)
            if a.bits is not None and b.bits is not None:
                np.testing.assert_array_equal(a.bits, b.bits)

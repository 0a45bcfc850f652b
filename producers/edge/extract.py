"""Images to activation bits, ``chunk`` images at a time, so memory follows the chunk, not the batch size."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from producers.edge.intake import Candidate
from shared.dataset.letterbox import read_image
from shared.dataset.loader import OnError, iter_batches
from shared.dataset.sources import DatasetError, read_labels
from shared.yolo.network import EdgeExtractor


@dataclass
class Extracted:
    """Activation bits of a few images of one split, and the candidates skipped since the previous piece."""

    bits: np.ndarray | None  # (N, C, H, W) bool for the N released candidates; None when N = 0
    targets: np.ndarray  # (M, 6) float32 [img in this piece, cls, cx, cy, w, h]
    released: list[Candidate]
    skipped: list[tuple[Candidate, str]] = field(default_factory=list)
    last_of_group: bool = False  # the split's last piece: its batch must be closed


def activation_bits(extractor: EdgeExtractor, images: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` float32 in [0, 1] or uint8 -> ``(N, C, H, W) bool`` of ``activation > 0``."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)  # exactly what the loader's float path computes
    bits: np.ndarray = extractor.extract(images).gt(0).numpy()
    return bits


def skip_reason(candidate: Candidate, num_classes: int | None) -> str:
    """Why the loader could not use ``candidate`` (it logs the reason; we re-derive it for the ledger)."""
    try:
        read_labels(candidate.sample.labels, num_classes)
        read_image(candidate.sample.image)
    except DatasetError as err:
        return str(err)
    return "unreadable"


def extract_pieces(
    groups: Sequence[list[Candidate]],
    extractor: EdgeExtractor,
    *,
    img_size: int,
    chunk: int,
    on_error: OnError,
    workers: int,
    num_classes: int | None,
    stop: threading.Event,
) -> Iterator[Extracted]:
    """Pieces of up to ``chunk`` images of each group (one group per split); skips ride along."""
    for group in groups:
        handled = [0]  # samples the loader has finished with, skipped ones included
        reported = 0

        def note(done: int, handled: list[int] = handled) -> None:
            handled[0] = done  # called by the loader before it yields each piece

        pieces = iter_batches(
            [c.sample for c in group],
            img_size,
            chunk,
            on_error=on_error,
            workers=workers,
            num_classes=num_classes,
            progress=note,
            uint8=True,
        )
        try:
            for piece in pieces:
                if stop.is_set():
                    return
                window, reported = group[reported : handled[0]], handled[0]
                kept = {s.image for s in piece.samples}
                released = [c for c in window if c.sample.image in kept]
                skipped = [(c, skip_reason(c, num_classes)) for c in window if c.sample.image not in kept]
                yield Extracted(activation_bits(extractor, piece.images), piece.targets.numpy(), released, skipped)
        finally:
            _close(pieces)  # stops the loader's decoding threads when we stop early
        trailing = [(c, skip_reason(c, num_classes)) for c in group[reported : handled[0]]]
        yield Extracted(None, np.zeros((0, 6), np.float32), [], trailing, last_of_group=True)


def _close(iterator: Iterator[object]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()

"""Images to activation bits, ``chunk`` images at a time, so memory follows the chunk, not the batch size.

On a CPU the fastest arrangement is data parallel: one extractor thread per core, each running one
chunk with a single torch thread and channels-last weights (no OpenMP barriers to stall when a
decoding thread takes a core; measured by ``mistnet bench``). On CUDA one thread feeds the GPU.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from producers.edge.intake import Candidate
from shared.dataset.letterbox import read_image
from shared.dataset.loader import Batch, OnError, iter_batches
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


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def extract_workers(extractor: EdgeExtractor, requested: int | None = None) -> int:
    """Extractor threads: ``requested``, else one per core on a CPU (at most 8) and one on a GPU."""
    if requested is not None:
        return requested
    return min(cpu_cores(), 8) if _device(extractor).type == "cpu" else 1


def prepare_extractor(extractor: EdgeExtractor, device: torch.device, requested: int | None = None) -> EdgeExtractor:
    """Move the extractor to ``device``; on a CPU use channels-last weights and share the cores among workers.

    Sets torch's intra-op threads (process-wide: call it from the composition root) to cores per
    extractor thread (see :func:`extract_workers`). Channels-last changes activations by float
    rounding only: a bit can differ only where an activation is within rounding of 0.
    """
    if device.type != "cpu":
        return extractor.to(device)
    extractor = extractor.to(device).to(memory_format=torch.channels_last)
    torch.set_num_threads(max(1, cpu_cores() // extract_workers(extractor, requested)))
    return extractor


def _device(extractor: EdgeExtractor) -> torch.device:
    return next(extractor.parameters()).device


def activation_bits(extractor: EdgeExtractor, images: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` float32 in [0, 1] or uint8 -> ``(N, C, H, W) bool`` of ``activation > 0``.

    Runs where the extractor's weights are; uint8 images cross to a GPU as uint8 (a quarter of the
    bytes, from pinned memory) and are converted there.
    """
    device = _device(extractor)
    if device.type != "cpu":
        images = images.pin_memory().to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)  # exactly what the loader's float path computes
    bits: np.ndarray = extractor.extract(images).gt(0).cpu().contiguous().numpy()
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
    extractors: int = 1,
) -> Iterator[Extracted]:
    """Pieces of up to ``chunk`` images of each group (one group per split); skips ride along.

    ``workers`` threads decode; ``extractors`` threads run the extractor on successive pieces at once,
    which still come out in order.
    """
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
            for piece, done, bits in _extract_in_order(pieces, handled, extractor, extractors, stop):
                window, reported = group[reported:done], done
                kept = {s.image for s in piece.samples}
                released = [c for c in window if c.sample.image in kept]
                skipped = [(c, skip_reason(c, num_classes)) for c in window if c.sample.image not in kept]
                yield Extracted(bits, piece.targets.numpy(), released, skipped)
            if stop.is_set():
                return
        finally:
            _close(pieces)  # stops the loader's decoding threads when we stop early
        trailing = [(c, skip_reason(c, num_classes)) for c in group[reported : handled[0]]]
        yield Extracted(None, np.zeros((0, 6), np.float32), [], trailing, last_of_group=True)


def _extract_in_order(
    pieces: Iterator[Batch], handled: list[int], extractor: EdgeExtractor, extractors: int, stop: threading.Event
) -> Iterator[tuple[Batch, int, np.ndarray]]:
    """``(piece, samples handled up to it, bits)`` in order, ``extractors`` pieces in flight; ends early on stop."""
    if extractors <= 1:
        for piece in pieces:
            if stop.is_set():
                return
            yield piece, handled[0], activation_bits(extractor, piece.images)
        return
    pool = ThreadPoolExecutor(max_workers=extractors, thread_name_prefix="edge-extractor")
    in_flight: deque[tuple[Batch, int, Future[np.ndarray]]] = deque()
    failure: Exception | None = None
    try:
        try:
            for piece in pieces:
                if stop.is_set():
                    return
                in_flight.append((piece, handled[0], pool.submit(activation_bits, extractor, piece.images)))
                if len(in_flight) == extractors:
                    ready, done, bits = in_flight.popleft()
                    yield ready, done, bits.result()
        except Exception as exc:  # e.g. a bad image read ahead: the pieces before it still come out first
            failure = exc
        while in_flight and not stop.is_set():
            ready, done, bits = in_flight.popleft()
            yield ready, done, bits.result()
        if failure is not None:
            raise failure
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _close(iterator: Iterator[object]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()

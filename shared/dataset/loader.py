"""Batches of letterboxed images and their targets, decoded in a thread pool ahead of the consumer."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import numpy as np
import torch

from shared.dataset.letterbox import (
    Letterbox,
    labels_to_letterbox,
    letterbox,
    read_image,
    read_image_shape,
    rect_batch_shapes,
)
from shared.dataset.sources import DatasetError, Sample, read_labels

logger = logging.getLogger(__name__)
T = TypeVar("T")

OnError = Literal["raise", "skip"]
#: Batches decoded ahead of the one the consumer holds; bounds memory while overlapping the model.
PREFETCH_BATCHES = 2


@dataclass
class Batch:
    """Images ready for the model with their targets and what is needed to map results back.

    ``images``: ``(N, 3, H, W) float32`` RGB in [0, 1] (``uint8`` 0..255 if asked for); ``targets``: ``(M, 6) float32
    [img_index_in_batch, cls, cx, cy, w, h]`` normalised to the letterboxed image; ``labels``: per image
    ``(Mi, 5) float32 [cls, cx, cy, w, h]`` normalised to the original image.
    """

    images: torch.Tensor
    targets: torch.Tensor
    letterboxes: list[Letterbox]
    samples: list[Sample]
    labels: list[np.ndarray]


@dataclass(frozen=True)
class _Loaded:
    sample: Sample
    image: np.ndarray
    box: Letterbox
    labels: np.ndarray


def images_to_tensor(images: Sequence[np.ndarray], *, uint8: bool = False) -> torch.Tensor:
    """Same-shaped ``(H, W, 3) uint8`` BGR images → one contiguous ``(N, 3, H, W) float32`` RGB in [0, 1].

    ``uint8=True`` keeps ``(N, 3, H, W) uint8`` RGB (a quarter of the memory; divide by 255 before use).
    """
    h, w = images[0].shape[:2] if images else (0, 0)
    stacked = torch.empty((len(images), 3, h, w), dtype=torch.uint8)
    planes = stacked.numpy()
    for i, image in enumerate(images):
        for c in range(3):  # one strided copy per plane: BGR HWC -> RGB CHW without a stacked temporary
            planes[i, c] = image[:, :, 2 - c]
    return stacked if uint8 else stacked.float().div_(255.0)


def iter_batches(
    samples: Sequence[Sample],
    img_size: int,
    batch_size: int,
    *,
    rect: bool = False,
    on_error: OnError = "raise",
    workers: int = 2,
    num_classes: int | None = None,
    progress: Callable[[int], None] | None = None,
    uint8: bool = False,
) -> Iterator[Batch]:
    """Letterboxed batches of ``samples`` in a deterministic order.

    Square ``img_size`` images by default; ``rect=True`` reorders and shapes batches as YOLOv5 val.py
    does (see :func:`rect_batch_shapes`; the image headers are read up front for that). A sample that
    cannot be read raises :class:`DatasetError`, or with ``on_error="skip"`` is logged and left out (a
    batch may then be smaller; an empty one is not yielded). Labels of class ``>= num_classes``, when
    given, count as unreadable. ``progress`` is called after each batch
    with the number of samples handled so far, skipped ones included. ``uint8=True`` yields images as
    ``(N, 3, H, W) uint8`` for consumers that convert a slice at a time (bounded memory).
    """
    if img_size < 1 or batch_size < 1 or workers < 1:
        raise ValueError(f"img_size={img_size}, batch_size={batch_size} and workers={workers} must all be at least 1")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    if rect:
        plans, dropped = _plan_rect(samples, img_size, batch_size, on_error, workers)
    else:
        starts = range(0, len(samples), batch_size)
        plans = [(list(range(s, min(s + batch_size, len(samples)))), (img_size, img_size)) for s in starts]
        dropped = 0
    load = partial(_load, num_classes=num_classes)
    collate = partial(_collate, uint8=uint8)
    return _generate(samples, plans, load, collate, done=dropped, on_error=on_error, workers=workers, progress=progress)


#: Sample indices of one batch and its output ``(h, w)``.
_Plan = tuple[list[int], tuple[int, int]]


def _plan_rect(
    samples: Sequence[Sample], img_size: int, batch_size: int, on_error: OnError, workers: int
) -> tuple[list[_Plan], int]:
    """YOLOv5's rectangular batches over the readable samples, and how many were dropped."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dataset-shape") as pool:
        probes = [(sample, pool.submit(read_image_shape, sample.image)) for sample in samples]
        shapes = [_settle(sample, probe, on_error) for sample, probe in probes]
    kept = [(i, shape) for i, shape in enumerate(shapes) if shape is not None]
    order, batch_shapes = rect_batch_shapes([shape for _, shape in kept], img_size, batch_size)
    ordered = [kept[i][0] for i in order]
    batches = [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]
    return list(zip(batches, batch_shapes, strict=True)), len(samples) - len(kept)


def _generate(
    samples: Sequence[Sample],
    plans: list[_Plan],
    load: Callable[[Sample, tuple[int, int]], _Loaded],
    collate: Callable[[list[_Loaded]], Batch],
    *,
    done: int,
    on_error: OnError,
    workers: int,
    progress: Callable[[int], None] | None,
) -> Iterator[Batch]:
    """Runs the plans in a thread pool; while a batch is out, at most PREFETCH_BATCHES more are queued."""
    queue = deque(plans)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dataset")
    pending: deque[list[tuple[Sample, Future[_Loaded]]]] = deque()

    def submit_next() -> None:
        if queue:
            indices, shape = queue.popleft()
            pending.append([(samples[i], pool.submit(load, samples[i], shape)) for i in indices])

    try:
        for _ in range(1 + PREFETCH_BATCHES):
            submit_next()
        while pending:
            futures = pending.popleft()
            settled = [_settle(sample, future, on_error) for sample, future in futures]
            loaded = [item for item in settled if item is not None]
            done += len(futures)
            if progress is not None:
                progress(done)
            if loaded:
                yield collate(loaded)
            submit_next()
    finally:
        # An abandoned iterator must not leave decodes running behind it.
        pool.shutdown(wait=True, cancel_futures=True)


def _settle(sample: Sample, future: Future[T], on_error: OnError) -> T | None:
    """The future's result, or None once logged when it failed with a DatasetError and we skip."""
    try:
        return future.result()
    except DatasetError as err:
        if on_error == "raise":
            raise
        logger.warning(
            "skipping %s: %s",
            sample.image,
            err,
            extra={"image_path": str(sample.image), "reason": str(err)},
        )
        return None


def _load(sample: Sample, shape: tuple[int, int], num_classes: int | None) -> _Loaded:
    """Read, letterbox and label one sample (runs in a worker thread; cv2 releases the GIL)."""
    labels = read_labels(sample.labels, num_classes)
    image, box = letterbox(read_image(sample.image), shape)
    return _Loaded(sample, image, box, labels)


def _collate(loaded: list[_Loaded], uint8: bool = False) -> Batch:
    targets = [
        np.concatenate([np.full((len(item.labels), 1), i, np.float32), labels_to_letterbox(item.labels, item.box)], 1)
        for i, item in enumerate(loaded)
    ]
    return Batch(
        images=images_to_tensor([item.image for item in loaded], uint8=uint8),
        targets=torch.from_numpy(np.concatenate(targets, axis=0)),
        letterboxes=[item.box for item in loaded],
        samples=[item.sample for item in loaded],
        labels=[item.labels for item in loaded],
    )

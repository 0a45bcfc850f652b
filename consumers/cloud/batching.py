"""Stored bits to model inputs: seeded epoch plans over images, and a loader thread unpacking into reused buffers.

Every image of a batch is a whole number of bytes (channels are multiples of 8 in YOLOv5), so one
image is read with one ``readinto`` into a reused byte buffer and expanded to float32 by a 256-entry
table straight into a reused input buffer (``np.take``), while the model trains on the previous step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from consumers.cloud.store import StoredBatch

#: byte -> its 8 bits, most significant first (``np.packbits`` order), as float32.
_BITS_OF_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)

#: One image: (index of its stored batch in the list given, image index within that batch).
Slot = tuple[int, int]


def unpack_into(packed: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Expand ``packed`` uint8 bytes into ``out`` (float32, ``8 * packed.size`` elements) as 0.0/1.0."""
    np.take(_BITS_OF_BYTE, packed, axis=0, out=out.reshape(-1, 8))
    return out


def plan_epoch(batches: Sequence[StoredBatch], batch_size: int, rng: np.random.Generator) -> list[list[Slot]]:
    """Every image of ``batches`` exactly once, shuffled by ``rng``, cut into steps of ``batch_size``."""
    slots = np.array([(b, i) for b, batch in enumerate(batches) for i in range(batch.shape[0])], dtype=np.int64)
    order = rng.permutation(len(slots))
    shuffled = [(int(b), int(i)) for b, i in slots[order]] if len(slots) else []
    return [shuffled[start : start + batch_size] for start in range(0, len(shuffled), batch_size)]


def plan_in_order(batches: Sequence[StoredBatch], batch_size: int) -> list[list[Slot]]:
    """Every image in storage order, in steps of ``batch_size`` (for evaluation)."""
    slots = [(b, i) for b, batch in enumerate(batches) for i in range(batch.shape[0])]
    return [slots[start : start + batch_size] for start in range(0, len(slots), batch_size)]


@dataclass
class Step:
    """One model input: ``features`` (N, C, H, W) float32 0/1 (a view of a reused buffer), ``targets`` (M, 6)."""

    slots: list[Slot]
    features: np.ndarray
    targets: np.ndarray


class FeatureLoader:
    """Assembles steps of stored images in a background thread, ``prefetch`` steps ahead.

    ``prefetch + 1`` buffers rotate: a step's buffer is refilled only after the caller asked for
    the following step, so a step's ``features`` stay valid until then.
    """

    def __init__(self, batches: Sequence[StoredBatch], batch_size: int, prefetch: int = 2, *, pin_memory: bool = False):
        if not batches:
            raise ValueError("no stored batches to load")
        shapes = {batch.shape[1:] for batch in batches}
        if len(shapes) != 1:
            raise ValueError(f"stored batches have different feature shapes: {sorted(shapes)}")
        self.batches = batches
        self.chw = shapes.pop()
        self.image_bytes = int(np.prod(self.chw)) // 8
        self.prefetch = prefetch
        # Pinned (page-locked) buffers let a GPU copy them without blocking; only with CUDA present.
        # No step holds more images than there are, so a small validation set gets small buffers.
        batch_size = min(batch_size, sum(batch.shape[0] for batch in batches))
        shape = (batch_size, *self.chw)
        self._buffers = [
            torch.empty(shape, dtype=torch.float32, pin_memory=pin_memory).numpy() for _ in range(prefetch + 1)
        ]
        self._packed = [np.empty(batch_size * self.image_bytes, dtype=np.uint8) for _ in range(prefetch + 1)]
        self._targets = [_targets_per_image(batch) for batch in batches]

    def steps(self, plan: Sequence[list[Slot]]) -> Iterator[Step]:
        """The steps of ``plan`` in order; closing the iterator early waits for the fills in flight."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-loader")
        pending: deque[Future[Step]] = deque()
        try:
            for index in range(min(self.prefetch, len(plan))):
                pending.append(pool.submit(self._fill, plan[index], index % len(self._buffers)))
            for index in range(len(plan)):
                ahead = index + self.prefetch
                if ahead < len(plan):
                    pending.append(pool.submit(self._fill, plan[ahead], ahead % len(self._buffers)))
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self, slots: list[Slot], buffer: int) -> Step:
        size = self.image_bytes
        packed = self._packed[buffer]
        view = packed.data
        by_file: dict[int, list[tuple[int, int]]] = {}
        for position, (b, i) in enumerate(slots):
            by_file.setdefault(b, []).append((position, i))
        for b, items in by_file.items():
            with self.batches[b].path.open("rb", buffering=0) as fh:
                for position, i in items:
                    fh.seek(i * size)
                    if fh.readinto(view[position * size : (position + 1) * size]) != size:
                        raise OSError(f"{self.batches[b].path} is shorter than its {self.batches[b].shape} bits")
        features = self._buffers[buffer][: len(slots)]
        unpack_into(packed[: len(slots) * size], features)
        targets = [self._targets[b][i] for b, i in slots]
        rows = [np.concatenate([np.full((len(t), 1), p, np.float32), t], axis=1) for p, t in enumerate(targets)]
        return Step(slots, features, np.concatenate(rows, axis=0) if rows else np.zeros((0, 6), np.float32))


def _targets_per_image(batch: StoredBatch) -> list[np.ndarray]:
    """(M, 6) targets -> per image (Mi, 5) ``[cls, cx, cy, w, h]``."""
    index = batch.targets[:, 0].astype(np.int64)
    return [batch.targets[index == i, 1:] for i in range(batch.shape[0])]

"""Pieces of extracted bits -> release batches of exactly ``batch_size`` images, randomised as they come.

Each piece is randomised and packed on arrival with its batch's generator, so only packed bytes wait
for a batch to fill (an eighth of the bits' memory). A split's last batch may be short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from producers.edge.extract import Extracted
from producers.edge.intake import Candidate
from producers.edge.ledger import OutboxRecord
from producers.edge.release import ReleaseSpec, batch_rng, build_message, randomize_and_pack


@dataclass(frozen=True)
class Staged:
    """A batch ready to persist (None when only skips are reported), its images and the skips."""

    record: OutboxRecord | None
    released: list[Candidate]
    skipped: list[tuple[Candidate, str]]


class BatchEncoder:
    """Numbers batches from ``first_seq``; call it per piece, it returns the batches completed."""

    def __init__(
        self,
        spec: ReleaseSpec,
        seeds: np.random.SeedSequence,
        *,
        first_seq: int,
        batch_size: int,
        clock: Callable[[], float],
    ):
        self._spec = spec
        self._seeds = seeds
        self._seq = first_seq
        self._batch_size = batch_size
        self._clock = clock
        self._rng: np.random.Generator | None = None
        self._payload: list[bytes] = []
        self._targets: list[np.ndarray] = []
        self._released: list[Candidate] = []
        self._skipped: list[tuple[Candidate, str]] = []

    def __call__(self, piece: Extracted) -> list[Staged]:
        done: list[Staged] = []
        self._skipped.extend(piece.skipped)
        count, offset = len(piece.released), 0
        while offset < count:
            assert piece.bits is not None
            take = min(count - offset, self._batch_size - len(self._released))
            if self._released and piece.released[offset].split != self._released[0].split:
                raise ValueError("a batch must hold one split; close each split with last_of_group")
            if self._rng is None:
                self._rng = batch_rng(self._seeds, self._seq)
            self._payload.append(randomize_and_pack(piece.bits[offset : offset + take], self._spec, self._rng))
            rows = piece.targets[(piece.targets[:, 0] >= offset) & (piece.targets[:, 0] < offset + take)].copy()
            rows[:, 0] += len(self._released) - offset
            self._targets.append(rows)
            self._released.extend(piece.released[offset : offset + take])
            offset += take
            if len(self._released) == self._batch_size:
                done.append(self._close_batch())
        if piece.last_of_group and (self._released or self._skipped):
            done.append(self._close_batch())
        return done

    def _close_batch(self) -> Staged:
        released, skipped = self._released, self._skipped
        self._released, self._skipped = [], []
        if not released:
            return Staged(None, [], skipped)
        record = build_message(
            b"".join(self._payload),
            np.concatenate(self._targets) if self._targets else np.zeros((0, 6), np.float32),
            image_ids=[c.image_id for c in released],
            split=released[0].split,
            seq=self._seq,
            spec=self._spec,
            created_at=self._clock(),
        )
        self._seq += 1
        self._rng, self._payload, self._targets = None, [], []
        return Staged(record, released, skipped)

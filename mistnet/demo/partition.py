"""Deterministic partitions of a labelled folder into edges and a held-out set (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.dataset.sources import Sample


@dataclass(frozen=True)
class Partition:
    """Disjoint image lists: one per edge, plus the held-out images no edge trains on."""

    edges: dict[str, list[Sample]]
    held_out: list[Sample]


def _order_key(sample: Sample, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{sample.image.name}".encode()).hexdigest()


def partition(samples: Sequence[Sample], edges: Sequence[str], held_out: int, seed: int = 0) -> Partition:
    """Shuffle by a seeded hash of the file name, hold out ``held_out`` images, deal the rest to ``edges``."""
    if held_out < 0 or held_out >= len(samples):
        raise ValueError(f"held_out must be in [0, {len(samples)}), got {held_out}")
    ordered = sorted(samples, key=lambda s: _order_key(s, seed))
    rest = ordered[held_out:]
    return Partition(
        edges={name: rest[i :: len(edges)] for i, name in enumerate(edges)},
        held_out=ordered[:held_out],
    )


def write_index(samples: Sequence[Sample], path: Path) -> Path:
    """A Sedna-style txt index (one ``image [labels]`` per line), absolute paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s.image.resolve()} {s.labels.resolve()}" if s.labels else str(s.image.resolve()) for s in samples]
    path.write_text("\n".join(lines) + "\n")
    return path

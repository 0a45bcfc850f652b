"""A Jepsen-style checker of one job: lost, duplicated, unexpected and recovered, from durable state only.

It reads what the system itself keeps, never the daemons' memory or logs:

- each edge's ledger (``ledger.sqlite`` in its state dir): the batches it released, their images and
  the times each was persisted (``created_at``) and confirmed by the broker (``confirmed_at``);
- the cloud's feature store (``index.sqlite``): the batches it stored, the rounds it committed with
  their watermarks, and which batches every epoch trained (``trained``);
- the ``round.completed`` events the cloud published, and the dead-lettered message ids.

Definitions (per job):

- **lost**: images in batches an edge released (persisted in its ledger) that are not in the store
  with the same image count;
- **duplicated**: images released twice by an edge, batches stored twice, and images trained more
  than once in one epoch of one round (or trained though not stored);
- **unexpected**: batches in the store that no edge released;
- **recovered**: released batches that were in flight while a fault was injected (persisted by the edge
  before it ended, and confirmed by the broker or stored by the cloud after it began) and are
  nevertheless stored: they needed a retry, a resend from the outbox or a redelivery.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger.sqlite"
STORE_INDEX = "index.sqlite"


@dataclass(frozen=True)
class ReleasedBatch:
    """One batch in an edge's ledger."""

    edge: str
    seq: int
    message_id: str
    split: str
    images: int
    image_ids: tuple[str, ...]
    state: str
    created_at: float
    confirmed_at: float | None


@dataclass(frozen=True)
class StoredRow:
    id: int
    message_id: str
    edge: str
    seq: int
    split: str
    images: int
    stored_at: float


@dataclass(frozen=True)
class FaultWindow:
    """When a fault was in force (``time.time()`` seconds); ``what`` names it in the summary."""

    what: str
    started_at: float
    ended_at: float


@dataclass
class Verdict:
    """The checker's result; ``valid`` when nothing was lost, duplicated or unexpected and every round ran."""

    job: str
    released_batches: int
    released_images: int
    stored_batches: int
    stored_images: int
    lost_images: int
    lost_batches: list[tuple[str, int]]
    duplicated: int
    duplicated_detail: dict[str, int]
    unexpected_batches: list[tuple[str, int]]
    recovered: int
    unconfirmed_batches: int
    dead_lettered: int
    rounds_expected: int
    rounds_completed: list[int]
    rounds_in_events: list[int] | None  # None: no events were given to check
    event_redeliveries: int
    untrained_batches: int
    faults: list[FaultWindow] = field(default_factory=list)

    @property
    def unexpected(self) -> int:
        return len(self.unexpected_batches)

    @property
    def valid(self) -> bool:
        every_round = list(range(1, self.rounds_expected + 1))
        return (
            self.lost_images == 0
            and not self.lost_batches
            and self.duplicated == 0
            and self.unexpected == 0
            and self.dead_lettered == 0
            and self.rounds_completed == every_round
            and self.rounds_in_events in (None, every_round)
        )

    def summary(self) -> str:
        """A few aligned lines, like Jepsen's RabbitMQ checker prints them."""
        faults = "; ".join(f"{f.what} ({f.ended_at - f.started_at:.1f} s)" for f in self.faults) or "none"
        detail = ", ".join(f"{k} {v}" for k, v in self.duplicated_detail.items())
        lines = [
            f"job {self.job}: faults: {faults}",
            f"  released    {self.released_images} images in {self.released_batches} batches (ledgers)",
            f"  stored      {self.stored_images} images in {self.stored_batches} batches (feature store)",
            f"  :lost       {self.lost_images}" + (f"  batches {self.lost_batches}" if self.lost_batches else ""),
            f"  :duplicated {self.duplicated}  ({detail})",
            f"  :unexpected {self.unexpected}" + (f"  {self.unexpected_batches}" if self.unexpected_batches else ""),
            f"  :recovered  {self.recovered} batches in flight across a fault, stored",
            f"  unconfirmed {self.unconfirmed_batches}  dead-lettered {self.dead_lettered}"
            f"  untrained {self.untrained_batches}",
            f"  rounds      committed {self.rounds_completed}, events {self.rounds_in_events}"
            f" (redelivered {self.event_redeliveries}) of {self.rounds_expected}",
            f"  :valid?     {str(self.valid).lower()}",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "valid": self.valid,
            "lost": self.lost_images,
            "duplicated": self.duplicated,
            "unexpected": self.unexpected,
            "recovered": self.recovered,
            "released_images": self.released_images,
            "stored_images": self.stored_images,
            "rounds": self.rounds_completed,
        }


def _read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def read_ledger(state_dir: Path, edge: str, job: str) -> tuple[list[ReleasedBatch], Counter[str]]:
    """The batches ``edge`` released for ``job`` and how often each image (by digest) was released."""
    db = _read_only(state_dir / LEDGER_FILE)
    try:
        ids: dict[int, list[str]] = {}
        rows = db.execute(
            "SELECT r.seq, i.image_id FROM releases r JOIN images i ON i.digest = r.digest WHERE r.job = ?"
            " ORDER BY r.seq, i.image_id",
            (job,),
        )
        for seq, image_id in rows:
            ids.setdefault(int(seq), []).append(str(image_id))
        batches = [
            ReleasedBatch(
                edge, int(seq), str(mid), str(split), int(n), tuple(ids.get(int(seq), ())), str(state), float(c), conf
            )
            for seq, mid, split, n, state, c, conf in db.execute(
                "SELECT seq, message_id, split, images, state, created_at, confirmed_at FROM batches"
                " WHERE job = ? ORDER BY seq",
                (job,),
            )
        ]
        releases = Counter(
            {
                str(d): int(n)
                for d, n in db.execute("SELECT digest, COUNT(*) FROM releases WHERE job = ? GROUP BY digest", (job,))
            }
        )
    finally:
        db.close()
    return batches, releases


def read_store(store_dir: Path) -> tuple[list[StoredRow], list[tuple[int, int]], dict[tuple[int, int], dict[int, int]]]:
    """``(batches, [(round, watermark)], {(round, epoch): {batch_id: images trained}})`` of a feature store."""
    db = _read_only(store_dir / STORE_INDEX)
    try:
        stored = [
            StoredRow(*row)
            for row in db.execute("SELECT id, message_id, edge, seq, split, images, stored_at FROM batches ORDER BY id")
        ]
        rounds = [(int(r), int(w)) for r, w in db.execute("SELECT round, watermark FROM rounds ORDER BY round")]
        trained: dict[tuple[int, int], dict[int, int]] = {}
        for round_no, epoch, batch_id, images in db.execute("SELECT round, epoch, batch_id, images FROM trained"):
            trained.setdefault((int(round_no), int(epoch)), {})[int(batch_id)] = int(images)
    finally:
        db.close()
    return stored, rounds, trained


def _training_duplicates(
    stored: Sequence[StoredRow], rounds: Sequence[tuple[int, int]], trained: Mapping[tuple[int, int], dict[int, int]]
) -> tuple[int, int]:
    """(images trained more than once per epoch or without being stored, train batches a round skipped)."""
    by_id = {row.id: row for row in stored}
    watermark = dict(rounds)
    duplicated = skipped = 0
    for (round_no, _epoch), log in trained.items():
        mark = watermark.get(round_no, -1)
        expected = {row.id: row.images for row in stored if row.split == "train" and row.id <= mark}
        for batch_id, images in log.items():
            row = by_id.get(batch_id)
            duplicated += images if row is None else max(0, images - row.images)
        skipped += sum(1 for batch_id in expected if batch_id not in log)
    return duplicated, skipped


def check_job(
    job: str,
    edges: Mapping[str, Path],
    store_dir: Path,
    round_events: Iterable[Mapping[str, Any]] | None,
    *,
    rounds: int,
    faults: Sequence[FaultWindow] = (),
    dead_message_ids: Iterable[str] = (),
) -> Verdict:
    """Compare every edge's ledger (``edges``: name -> state dir) with the cloud's store and events."""
    released: dict[tuple[str, int], ReleasedBatch] = {}
    re_released = 0
    for edge, state_dir in edges.items():
        batches, releases = read_ledger(state_dir, edge, job)
        released.update({(b.edge, b.seq): b for b in batches})
        re_released += sum(n - 1 for n in releases.values() if n > 1)
    stored, committed, trained = read_store(store_dir)
    stored_by_key: dict[tuple[str, int], list[StoredRow]] = {}
    for row in stored:
        stored_by_key.setdefault((row.edge, row.seq), []).append(row)

    lost_batches = sorted(
        key for key, b in released.items() if [r.images for r in stored_by_key.get(key, [])][:1] != [b.images]
    )
    lost_images = sum(released[key].images for key in lost_batches)
    unexpected = sorted(key for key in stored_by_key if key not in released)
    stored_twice = sum(len(rows) - 1 for rows in stored_by_key.values())
    trained_twice, skipped = _training_duplicates(stored, committed, trained)

    recovered = 0
    for key, batch in released.items():
        rows = stored_by_key.get(key)
        if rows:
            last_step = max(batch.confirmed_at or float("inf"), rows[0].stored_at)
            recovered += any(batch.created_at <= f.ended_at and last_step >= f.started_at for f in faults)

    events = list(round_events or [])
    event_ids = Counter(str(e.get("id")) for e in events)
    last_mark = committed[-1][1] if committed else 0
    released_ids = {b.message_id for b in released.values()}
    return Verdict(
        job=job,
        released_batches=len(released),
        released_images=sum(b.images for b in released.values()),
        stored_batches=len(stored),
        stored_images=sum(row.images for row in stored),
        lost_images=lost_images,
        lost_batches=lost_batches,
        duplicated=re_released + stored_twice + trained_twice,
        duplicated_detail={"re-released": re_released, "stored twice": stored_twice, "trained twice": trained_twice},
        unexpected_batches=unexpected,
        recovered=recovered,
        unconfirmed_batches=sum(b.state != "confirmed" for b in released.values()),
        dead_lettered=sum(1 for mid in dead_message_ids if mid in released_ids),
        rounds_expected=rounds,
        rounds_completed=[r for r, _ in committed],
        rounds_in_events=None if round_events is None else sorted({int(e["round"]) for e in events}),
        event_redeliveries=sum(n - 1 for n in event_ids.values()),
        untrained_batches=skipped + sum(1 for row in stored if row.split == "train" and row.id > last_mark),
        faults=list(faults),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.integration.faults.checker --job J --store DIR --edge NAME=STATE_DIR ... [--events FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--job", required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--edge", action="append", default=[], help="NAME=STATE_DIR, once per edge")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--events", type=Path, help="JSON lines of round.completed events (mistnet monitor --json)")
    args = parser.parse_args(argv)
    edges = dict(pair.split("=", 1) for pair in args.edge)
    events = None
    if args.events is not None:
        events = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
        events = [e for e in events if e.get("type") == "round.completed"]
    verdict = check_job(args.job, {k: Path(v) for k, v in edges.items()}, args.store, events, rounds=args.rounds)
    print(verdict.summary())
    return 0 if verdict.valid else 1


if __name__ == "__main__":
    raise SystemExit(main())

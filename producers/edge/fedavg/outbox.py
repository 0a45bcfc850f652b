"""The edge's FedAvg rounds in its ledger file: each round's update is persisted before it is sent.

Table ``fedavg_rounds`` in ``ledger.sqlite`` (its own connection; the :class:`~producers.edge.ledger.Ledger`
lock keeps a second daemon away). A round is ``pending`` from the moment its update is computed until
the broker confirmed the message, then ``confirmed`` (spooled bytes dropped); a ``pending`` round is
re-sent byte for byte after a restart instead of being trained again. ``abandoned`` rounds (a bad
start-round, no usable images) are acknowledged and never retried.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

State = Literal["pending", "confirmed", "abandoned"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fedavg_rounds (
    job TEXT NOT NULL, round INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'abandoned')),
    message_id TEXT, body BLOB, payload BLOB, object_key TEXT, samples INTEGER, wire_bytes INTEGER,
    reason TEXT, created_at REAL NOT NULL, confirmed_at REAL, PRIMARY KEY (job, round));
"""


@dataclass(frozen=True)
class UpdateRecord:
    """A computed update: the exact message body and the safetensors payload for ``object_key``."""

    job: str
    round: int
    message_id: str
    body: bytes
    payload: bytes
    object_key: str
    samples: int

    @property
    def wire_bytes(self) -> int:
        return len(self.body) + len(self.payload)


@dataclass(frozen=True)
class RoundState:
    state: State
    record: UpdateRecord | None
    reason: str | None


class UpdateOutbox:
    """Thread-safe access to ``fedavg_rounds``; every method is one short transaction."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, job: str, round_no: int) -> RoundState | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT state, message_id, body, payload, object_key, samples, reason FROM fedavg_rounds"
                " WHERE job = ? AND round = ?",
                (job, round_no),
            ).fetchone()
        if row is None:
            return None
        state, message_id, body, payload, key, samples, reason = row
        record = None
        if state == "pending":
            record = UpdateRecord(job, round_no, message_id, bytes(body), bytes(payload), key, int(samples))
        return RoundState(state, record, reason)

    def persist(self, record: UpdateRecord) -> None:
        """The computed update, ``pending``, before anything leaves the machine."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO fedavg_rounds (job, round, state, message_id, body, payload, object_key, samples,"
                " wire_bytes, created_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.job,
                    record.round,
                    record.message_id,
                    record.body,
                    record.payload,
                    record.object_key,
                    record.samples,
                    record.wire_bytes,
                    time.time(),
                ),
            )

    def mark_confirmed(self, job: str, round_no: int) -> None:
        """The broker has the update message: keep its numbers, drop its spooled bytes."""
        with self._tx() as db:
            db.execute(
                "UPDATE fedavg_rounds SET state = 'confirmed', confirmed_at = ?, body = NULL, payload = NULL"
                " WHERE job = ? AND round = ?",
                (time.time(), job, round_no),
            )

    def abandon(self, job: str, round_no: int, reason: str) -> None:
        """Never send an update for this round (a pending one is dropped)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO fedavg_rounds (job, round, state, reason, created_at) VALUES (?, ?, 'abandoned', ?, ?)"
                " ON CONFLICT (job, round) DO UPDATE SET state = 'abandoned', reason = excluded.reason,"
                " body = NULL, payload = NULL WHERE fedavg_rounds.state != 'confirmed'",
                (job, round_no, reason, time.time()),
            )

    def rounds(self, job: str) -> dict[int, State]:
        """Round -> state of every round this edge handled in ``job`` (for audits and tests)."""
        with self._tx() as db:
            rows = db.execute("SELECT round, state FROM fedavg_rounds WHERE job = ?", (job,)).fetchall()
        return {int(r): s for r, s in rows}

"""The FedAvg state of the cloud: each round's global model, the edges' updates, and stragglers.

Beside the feature store in the same folder: ``fedavg.sqlite`` and files under ``fedavg/``. An update
is durable once its file is fsynced and its row committed, in that order; only then is its message
acknowledged. A round is *closed* in one transaction before it is aggregated, and an update is
stored only while its round is open, so the set averaged is exactly the set stored before closing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from consumers.cloud.store import write_durably

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    global_sha256 TEXT NOT NULL,
    global_uri TEXT NOT NULL,
    global_size INTEGER NOT NULL,
    control_bytes INTEGER NOT NULL,
    started_at REAL NOT NULL,
    deadline_at REAL,
    closed_at REAL
);
CREATE TABLE IF NOT EXISTS updates (
    round INTEGER NOT NULL REFERENCES rounds (round),
    edge TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    samples INTEGER NOT NULL,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    wire_bytes INTEGER NOT NULL,
    measurements TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (round, edge)
);
CREATE TABLE IF NOT EXISTS stragglers (
    message_id TEXT PRIMARY KEY,
    edge TEXT NOT NULL,
    round INTEGER NOT NULL,
    during_round INTEGER NOT NULL,
    received_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class RoundStart:
    """A started round: the global model it sends (``global_size`` bytes) and its timing (Unix seconds)."""

    round: int
    global_sha256: str
    global_uri: str
    global_size: int
    control_bytes: int
    started_at: float
    deadline_at: float | None
    closed_at: float | None = None


@dataclass(frozen=True)
class NewUpdate:
    """A validated update about to be stored; ``payload`` is its safetensors file."""

    round: int
    edge: str
    message_id: str
    samples: int
    sha256: str
    payload: bytes
    wire_bytes: int
    measurements: dict[str, Any]


@dataclass(frozen=True)
class StoredUpdate:
    round: int
    edge: str
    samples: int
    path: Path
    sha256: str
    wire_bytes: int
    measurements: dict[str, Any]


PutResult = Literal["stored", "duplicate", "closed"]


class UpdateStore:
    """``root/fedavg.sqlite`` and ``root/fedavg/``; safe across threads."""

    def __init__(self, root: Path):
        self.root = root
        self.files = root / "fedavg"
        self.files.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "fedavg.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
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

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- rounds ------------------------------------------------------------------------------------

    def global_path(self, round_no: int) -> Path:
        """The local copy of round ``round_no``'s global model (re-published byte for byte after a restart)."""
        return self.files / "global" / f"round-{round_no:04d}.safetensors"

    def save_global(self, round_no: int, data: bytes) -> Path:
        path = self.global_path(round_no)
        write_durably(path, data)
        return path

    def start_round(self, start: RoundStart) -> RoundStart:
        """Record ``start`` unless the round was started before; returns the recorded start."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO rounds (round, global_sha256, global_uri, global_size, control_bytes,"
                " started_at, deadline_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    start.round,
                    start.global_sha256,
                    start.global_uri,
                    start.global_size,
                    start.control_bytes,
                    start.started_at,
                    start.deadline_at,
                ),
            )
        recorded = self.round_start(start.round)
        assert recorded is not None
        return recorded

    def round_start(self, round_no: int) -> RoundStart | None:
        rows = self._rows(
            "SELECT round, global_sha256, global_uri, global_size, control_bytes, started_at, deadline_at, closed_at"
            " FROM rounds WHERE round = ?",
            round_no,
        )
        return RoundStart(*rows[0]) if rows else None

    def open_round(self) -> RoundStart | None:
        """The round collecting updates now, if any."""
        rows = self._rows("SELECT round FROM rounds WHERE closed_at IS NULL ORDER BY round DESC LIMIT 1")
        return self.round_start(int(rows[0][0])) if rows else None

    def last_closed(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(round), 0) FROM rounds WHERE closed_at IS NOT NULL")[0][0])

    def close_round(self, round_no: int) -> None:
        """No update is stored for ``round_no`` after this returns (idempotent)."""
        with self._tx() as db:
            db.execute("UPDATE rounds SET closed_at = ? WHERE round = ? AND closed_at IS NULL", (time.time(), round_no))

    # --- updates -----------------------------------------------------------------------------------

    def has_message(self, message_id: str) -> bool:
        return bool(
            self._rows(
                "SELECT 1 FROM updates WHERE message_id = ? UNION SELECT 1 FROM stragglers WHERE message_id = ?",
                message_id,
                message_id,
            )
        )

    def put_update(self, update: NewUpdate) -> PutResult:
        """Store ``update`` durably while its round is open (blocking I/O: call from a worker thread)."""
        relative = (
            Path("fedavg") / "updates" / f"round-{update.round:04d}" / f"{update.edge}-{update.sha256[:16]}.safetensors"
        )
        write_durably(self.root / relative, update.payload)
        with self._tx() as db:
            row = db.execute("SELECT closed_at FROM rounds WHERE round = ?", (update.round,)).fetchone()
            if row is None or row[0] is not None:
                return "closed"
            cursor = db.execute(
                "INSERT OR IGNORE INTO updates (round, edge, message_id, samples, file, sha256, wire_bytes,"
                " measurements, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    update.round,
                    update.edge,
                    update.message_id,
                    update.samples,
                    str(relative),
                    update.sha256,
                    update.wire_bytes,
                    json.dumps(update.measurements),
                    time.time(),
                ),
            )
            return "stored" if cursor.rowcount == 1 else "duplicate"

    def reported(self, round_no: int) -> dict[str, int]:
        """Edge -> samples of every update stored for ``round_no``."""
        return {edge: int(n) for edge, n in self._rows("SELECT edge, samples FROM updates WHERE round = ?", round_no)}

    def updates(self, round_no: int) -> list[StoredUpdate]:
        rows = self._rows(
            "SELECT round, edge, samples, file, sha256, wire_bytes, measurements FROM updates WHERE round = ?"
            " ORDER BY edge",
            round_no,
        )
        return [StoredUpdate(r, e, n, self.root / f, s, b, json.loads(m)) for r, e, n, f, s, b, m in rows]

    def record_straggler(self, message_id: str, edge: str, round_no: int, during_round: int) -> bool:
        """Note a discarded late update once; False when it was noted before (a redelivery)."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO stragglers (message_id, edge, round, during_round, received_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (message_id, edge, round_no, during_round, time.time()),
            )
            return cursor.rowcount == 1

    def stragglers_during(self, round_no: int) -> list[dict[str, Any]]:
        """``[{edge, round}]`` of late updates discarded while ``round_no`` was the latest round."""
        rows = self._rows(
            "SELECT edge, round FROM stragglers WHERE during_round = ? ORDER BY received_at, edge", round_no
        )
        return [{"edge": edge, "round": int(r)} for edge, r in rows]

"""The cloud's feature store: packed bits as files, an SQLite index, and the rounds' bookkeeping.

A batch is durable once its file is fsynced and its index row committed, in that order; only then is
the message acknowledged. Message ids are unique, so a redelivery or a re-publish is stored once.
A round is committed with its training log in one transaction, after its checkpoint is on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    edge TEXT NOT NULL,
    seq INTEGER NOT NULL,
    split TEXT NOT NULL CHECK (split IN ('train', 'val')),
    images INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    file TEXT NOT NULL,
    targets BLOB NOT NULL,
    wire_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_edge_seq ON batches (edge, seq);
CREATE TABLE IF NOT EXISTS edges (
    edge TEXT PRIMARY KEY,
    batches INTEGER NOT NULL,
    train_images INTEGER NOT NULL,
    val_images INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    announced_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    watermark INTEGER NOT NULL,
    event TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS trained (
    round INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    batch_id INTEGER NOT NULL REFERENCES batches (id),
    images INTEGER NOT NULL,
    PRIMARY KEY (round, epoch, batch_id)
);
"""


class StoreError(RuntimeError):
    """The store belongs to another job or model, or cannot be written."""


@dataclass(frozen=True)
class StoredBatch:
    """One stored batch: ``shape`` (N, C, H, W) bits in ``path``; ``targets`` (M, 6) [img, cls, cx, cy, w, h]."""

    id: int
    edge: str
    seq: int
    split: str
    shape: tuple[int, int, int, int]
    path: Path
    targets: np.ndarray
    wire_bytes: int


@dataclass(frozen=True)
class NewBatch:
    """A validated batch about to be stored; ``payload`` is the packed bits."""

    message_id: str
    edge: str
    seq: int
    split: str
    shape: tuple[int, int, int, int]
    payload: bytes
    targets: np.ndarray
    wire_bytes: int
    created_at: float


@dataclass(frozen=True)
class EdgeAnnouncement:
    """What an edge said in its latest ``edge.done``."""

    edge: str
    batches: int
    train_images: int
    val_images: int
    event_id: str


@dataclass(frozen=True)
class CompletedRound:
    round: int
    watermark: int
    event: dict[str, Any]
    published: bool


class FeatureStore:
    """Folder ``root`` with ``index.sqlite``, ``features/<edge>/`` and ``checkpoints/``; safe across threads."""

    def __init__(self, root: Path):
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "index.sqlite", check_same_thread=False, isolation_level=None)
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

    def bind(self, identity: dict[str, str]) -> None:
        """Record which job and model this store serves; refuse a store made for another."""
        with self._tx() as db:
            known = dict(db.execute("SELECT key, value FROM meta").fetchall())
            for key, value in identity.items():
                if key in known and known[key] != value:
                    raise StoreError(
                        f"store {self.root} was made for {key}={known[key]!r}, not {value!r}; "
                        "use another --store folder for another job or model"
                    )
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", key)
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- batches -----------------------------------------------------------------------------------

    def has_message(self, message_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM batches WHERE message_id = ?", message_id))

    def put(self, batch: NewBatch) -> bool:
        """Store ``batch`` durably (blocking I/O: call from a worker thread); False if it was already stored."""
        if self.has_message(batch.message_id):
            return False
        name = hashlib.sha256(batch.message_id.encode()).hexdigest()[:32]
        relative = Path("features") / batch.edge / f"{name}.bits"
        write_durably(self.root / relative, batch.payload)
        targets = np.ascontiguousarray(batch.targets, dtype="<f4").tobytes()
        n, c, h, w = batch.shape
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO batches (message_id, edge, seq, split, images, channels, height, width, file,"
                " targets, wire_bytes, created_at, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch.message_id,
                    batch.edge,
                    batch.seq,
                    batch.split,
                    n,
                    c,
                    h,
                    w,
                    str(relative),
                    targets,
                    batch.wire_bytes,
                    batch.created_at,
                    time.time(),
                ),
            )
            return cursor.rowcount == 1

    def batches(self, split: str, up_to_id: int | None = None) -> list[StoredBatch]:
        """Stored batches of ``split`` with id <= ``up_to_id`` (all when None), in arrival order."""
        rows = self._rows(
            "SELECT id, edge, seq, split, images, channels, height, width, file, targets, wire_bytes FROM batches"
            " WHERE split = ? AND id <= ? ORDER BY id",
            split,
            up_to_id if up_to_id is not None else 1 << 62,
        )
        return [
            StoredBatch(
                id=row[0],
                edge=row[1],
                seq=row[2],
                split=row[3],
                shape=(row[4], row[5], row[6], row[7]),
                path=self.root / row[8],
                targets=np.frombuffer(row[9], dtype="<f4").reshape(-1, 6).astype(np.float32),
                wire_bytes=row[10],
            )
            for row in rows
        ]

    def last_batch_id(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(id), 0) FROM batches")[0][0])

    def wire_bytes(self, after_id: int, up_to_id: int) -> int:
        """Bytes received (bodies and referenced objects) for batches with ids in ``(after_id, up_to_id]``."""
        rows = self._rows(
            "SELECT COALESCE(SUM(wire_bytes), 0) FROM batches WHERE id > ? AND id <= ?", after_id, up_to_id
        )
        return int(rows[0][0])

    def seqs_by_edge(self) -> dict[str, set[int]]:
        result: dict[str, set[int]] = {}
        for edge, seq in self._rows("SELECT edge, seq FROM batches"):
            result.setdefault(edge, set()).add(seq)
        return result

    def train_edges(self) -> set[str]:
        return {row[0] for row in self._rows("SELECT DISTINCT edge FROM batches WHERE split = 'train'")}

    # --- edges -------------------------------------------------------------------------------------

    def announce(self, done: EdgeAnnouncement) -> None:
        """Record an edge's latest ``edge.done`` (a later one replaces an earlier one)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO edges (edge, batches, train_images, val_images, event_id, announced_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (done.edge, done.batches, done.train_images, done.val_images, done.event_id, time.time()),
            )

    def announcements(self) -> dict[str, EdgeAnnouncement]:
        rows = self._rows("SELECT edge, batches, train_images, val_images, event_id FROM edges")
        return {row[0]: EdgeAnnouncement(*row) for row in rows}

    # --- rounds ------------------------------------------------------------------------------------

    def commit_round(
        self, round_no: int, watermark: int, event: dict[str, Any], log: dict[tuple[int, int], int]
    ) -> None:
        """Record a completed round and which batches each epoch trained, ``(epoch, batch_id) -> images``."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO rounds (round, watermark, event, published) VALUES (?, ?, ?, 0)",
                (round_no, watermark, json.dumps(event)),
            )
            db.executemany(
                "INSERT INTO trained (round, epoch, batch_id, images) VALUES (?, ?, ?, ?)",
                [(round_no, epoch, batch_id, images) for (epoch, batch_id), images in sorted(log.items())],
            )

    def mark_published(self, round_no: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE rounds SET published = 1 WHERE round = ?", (round_no,))

    def completed_rounds(self) -> list[CompletedRound]:
        rows = self._rows("SELECT round, watermark, event, published FROM rounds ORDER BY round")
        return [CompletedRound(row[0], row[1], json.loads(row[2]), bool(row[3])) for row in rows]

    def training_log(self) -> dict[tuple[int, int], dict[int, int]]:
        """``(round, epoch) -> {batch_id: images trained}`` of every completed round."""
        log: dict[tuple[int, int], dict[int, int]] = {}
        for round_no, epoch, batch_id, images in self._rows("SELECT round, epoch, batch_id, images FROM trained"):
            log.setdefault((round_no, epoch), {})[batch_id] = images
        return log


def write_durably(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the folder: after return the file survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

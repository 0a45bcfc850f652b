"""The edge's SQLite state: privacy ledger (which image was released, ε spent) and the batch outbox.

One file per state dir, i.e. per edge across jobs: an image released for one job counts as released
for the next. A batch is written to the outbox together with its images' release records in one
transaction *before* anything leaves the machine; it is ``pending`` until the broker confirmed it,
then ``confirmed`` (its spooled bytes dropped). Pending batches are re-sent byte for byte after a restart.
"""

from __future__ import annotations

import fcntl
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

Split = Literal["train", "val"]
LEDGER_FILE = "ledger.sqlite"
_SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    digest TEXT PRIMARY KEY, image_id TEXT NOT NULL, split TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('released', 'skipped')),
    releases INTEGER NOT NULL DEFAULT 0, epsilon_spent REAL, last_run INTEGER,
    signature TEXT, reason TEXT, path TEXT, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    digest TEXT NOT NULL, job TEXT NOT NULL, seq INTEGER NOT NULL, epsilon REAL, run INTEGER NOT NULL,
    PRIMARY KEY (digest, job, seq));
CREATE TABLE IF NOT EXISTS batches (
    job TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL, split TEXT NOT NULL,
    images INTEGER NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'confirmed')),
    body BLOB, payload BLOB, object_key TEXT, wire_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL, confirmed_at REAL, PRIMARY KEY (job, seq));
"""


class LedgerError(RuntimeError):
    """The state dir cannot be used (not writable, held by another daemon, or another edge's)."""


@dataclass(frozen=True)
class OutboxRecord:
    """A persisted batch: the exact message body, and the claim-check payload when not inline."""

    job: str
    seq: int
    message_id: str
    split: Split
    images: int
    body: bytes
    payload: bytes | None
    object_key: str | None

    @property
    def wire_bytes(self) -> int:
        return len(self.body) + (len(self.payload) if self.payload is not None else 0)


@dataclass(frozen=True)
class ImageRecord:
    """One image's release (``reason`` None) or skip (``reason`` says why) in a batch transaction."""

    digest: str
    image_id: str
    split: Split
    path: str
    signature: str
    reason: str | None = None


@dataclass(frozen=True)
class ImageState:
    status: Literal["released", "skipped"]
    last_run: int | None
    signature: str | None


@dataclass(frozen=True)
class Totals:
    """Cumulative counts of one job's confirmed batches (what ``edge.done`` reports)."""

    batches: int
    confirmed_seqs_contiguous: bool
    images_released: int
    train_images: int
    val_images: int
    bytes_sent: int
    images_skipped: int
    epsilon_spent_max: float | None


class Ledger:
    """Thread-safe access to ``ledger.sqlite``; every method is one short transaction."""

    def __init__(self, path: Path, edge: str, *, exclusive: bool = True):
        """Open (creating) the ledger of ``edge``; ``exclusive`` holds a lock file so no second daemon uses it."""
        self.path = path
        self._lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._lock_file = _hold_lock(path.with_suffix(".lock"))
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a release record must survive power loss, or the image could be released twice.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(
                f"cannot open the ledger {path} ({exc}); the state dir must be a writable folder"
            ) from exc
        with self._tx():
            stored = self._meta("edge")
            if stored is not None and stored != edge:
                raise LedgerError(
                    f"the ledger {path} belongs to edge {stored!r}, not {edge!r}: give each edge its own state dir"
                )
            if stored is None:
                self._set_meta("edge", edge)
                self._set_meta("schema", _SCHEMA_VERSION)
                self._set_meta("id_secret", secrets.token_hex(32))
                self._set_meta("run", "0")
        self.secret = bytes.fromhex(self._meta("id_secret") or "")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def start_run(self) -> int:
        """A new run number: re-release with ``re_release`` means once per run."""
        with self._tx():
            run = int(self._meta("run") or "0") + 1
            self._set_meta("run", str(run))
        return run

    def next_seq(self, job: str) -> int:
        with self._tx():
            row = self._db.execute("SELECT MAX(seq) FROM batches WHERE job = ?", (job,)).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def cached_digests(self, paths: Iterable[str]) -> dict[str, tuple[int, int, str]]:
        """``path -> (size, mtime_ns, digest)`` remembered from earlier scans."""
        wanted = list(paths)
        result: dict[str, tuple[int, int, str]] = {}
        with self._tx():
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT path, size, mtime_ns, digest FROM files WHERE path IN ({marks})"  # noqa: S608
                rows = self._db.execute(query, chunk)
                result.update({str(p): (int(s), int(m), str(d)) for p, s, m, d in rows})
        return result

    def remember_digests(self, entries: Sequence[tuple[str, int, int, str]]) -> None:
        """Store ``(path, size, mtime_ns, digest)`` so unchanged files are not hashed again."""
        with self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO files (path, size, mtime_ns, digest) VALUES (?, ?, ?, ?)", entries
            )

    def image_states(self, digests: Iterable[str]) -> dict[str, ImageState]:
        wanted = list(digests)
        result: dict[str, ImageState] = {}
        with self._tx():
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT digest, status, last_run, signature FROM images WHERE digest IN ({marks})"  # noqa: S608
                for digest, status, last_run, signature in self._db.execute(query, chunk):
                    result[str(digest)] = ImageState(status, last_run, signature)
        return result

    def persist_batch(
        self,
        record: OutboxRecord | None,
        released: Sequence[ImageRecord],
        skipped: Sequence[ImageRecord],
        epsilon_image: float | None,
        run: int,
    ) -> None:
        """In ONE transaction: the batch into the outbox, its images as released (ε added), skips noted."""
        now = time.time()
        with self._tx():
            if record is not None:
                self._db.execute(
                    "INSERT INTO batches (job, seq, message_id, split, images, state, body, payload, object_key,"
                    " wire_bytes, created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                    (
                        record.job,
                        record.seq,
                        record.message_id,
                        record.split,
                        record.images,
                        record.body,
                        record.payload,
                        record.object_key,
                        record.wire_bytes,
                        now,
                    ),
                )
                for image in released:
                    self._release_image(image, record, epsilon_image, run, now)
            for image in skipped:
                self._db.execute(
                    "INSERT INTO images (digest, image_id, split, status, signature, reason, path, updated_at)"
                    " VALUES (?, ?, ?, 'skipped', ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET"
                    " signature = excluded.signature, reason = excluded.reason, path = excluded.path,"
                    " updated_at = excluded.updated_at WHERE images.status = 'skipped'",
                    (image.digest, image.image_id, image.split, image.signature, image.reason, image.path, now),
                )

    def _release_image(
        self, image: ImageRecord, record: OutboxRecord, epsilon: float | None, run: int, now: float
    ) -> None:
        self._db.execute(
            "INSERT INTO releases (digest, job, seq, epsilon, run) VALUES (?, ?, ?, ?, ?)",
            (image.digest, record.job, record.seq, epsilon, run),
        )
        self._db.execute(
            "INSERT INTO images (digest, image_id, split, status, releases, epsilon_spent, last_run, signature,"
            " path, updated_at) VALUES (?, ?, ?, 'released', 1, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET"
            " status = 'released', releases = images.releases + 1, reason = NULL,"
            " epsilon_spent = CASE WHEN excluded.epsilon_spent IS NULL THEN images.epsilon_spent"
            " ELSE COALESCE(images.epsilon_spent, 0) + excluded.epsilon_spent END,"
            " last_run = excluded.last_run, signature = excluded.signature, path = excluded.path,"
            " updated_at = excluded.updated_at",
            (image.digest, image.image_id, image.split, epsilon, run, image.signature, image.path, now),
        )

    def pending(self, job: str) -> list[OutboxRecord]:
        """Batches of ``job`` persisted but not confirmed, in sequence order."""
        with self._tx():
            rows = self._db.execute(
                "SELECT job, seq, message_id, split, images, body, payload, object_key FROM batches"
                " WHERE job = ? AND state = 'pending' ORDER BY seq",
                (job,),
            ).fetchall()
        return [
            OutboxRecord(j, s, m, sp, n, bytes(b), None if p is None else bytes(p), k)
            for j, s, m, sp, n, b, p, k in rows
        ]

    def mark_confirmed(self, job: str, seq: int) -> None:
        """The broker has the batch: keep its numbers, drop its spooled bytes."""
        with self._tx():
            self._db.execute(
                "UPDATE batches SET state = 'confirmed', confirmed_at = ?, body = NULL, payload = NULL"
                " WHERE job = ? AND seq = ?",
                (time.time(), job, seq),
            )

    def totals(self, job: str) -> Totals:
        with self._tx():
            batches, images, train, val, sent, seq_max = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(images), 0),"
                " COALESCE(SUM(CASE WHEN split = 'train' THEN images END), 0),"
                " COALESCE(SUM(CASE WHEN split = 'val' THEN images END), 0),"
                " COALESCE(SUM(wire_bytes), 0), MAX(seq) FROM batches WHERE job = ? AND state = 'confirmed'",
                (job,),
            ).fetchone()
            skipped, eps_max = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM images WHERE status = 'skipped'),"
                " (SELECT MAX(epsilon_spent) FROM images WHERE status = 'released')"
            ).fetchone()
        contiguous = batches == 0 or (seq_max is not None and int(seq_max) + 1 == batches)
        return Totals(int(batches), contiguous, int(images), int(train), int(val), int(sent), int(skipped), eps_max)

    def release_counts(self, job: str | None = None) -> dict[str, int]:
        """``digest -> number of releases`` (for audits and tests), for one job or all."""
        where, args = ("WHERE job = ?", (job,)) if job is not None else ("", ())
        with self._tx():
            rows = self._db.execute(f"SELECT digest, COUNT(*) FROM releases {where} GROUP BY digest", args)  # noqa: S608
            return {str(d): int(n) for d, n in rows}


def _hold_lock(path: Path) -> IO[bytes]:
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LedgerError(f"another mistnet edge daemon holds {path}; run one daemon per state dir") from None
    return handle


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``) under the ledger's lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock):
        self._db = db
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            self._lock.release()

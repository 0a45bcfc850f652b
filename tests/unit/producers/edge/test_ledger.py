"""Tests of producers.edge.ledger: the outbox states, atomic release records, ε accounting, ownership."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from producers.edge.ledger import LEDGER_FILE, ImageRecord, Ledger, LedgerError, OutboxRecord, Split


def record(seq: int, job: str = "job", images: int = 2, payload: bytes | None = None) -> OutboxRecord:
    split: Split = "val" if seq % 2 else "train"
    key = f"{job}/features/e/{seq}.bin" if payload is not None else None
    return OutboxRecord(job, seq, f"features:{job}:e:{seq}", split, images, b"body-%d" % seq, payload, key)


def image(name: str, split: Split = "train") -> ImageRecord:
    return ImageRecord(f"digest-{name}", f"id-{name}", split, f"/data/{name}.jpg", "sig")


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / LEDGER_FILE, "e")


class TestOutbox:
    """A batch is pending with its bytes until confirmed; then only its numbers remain."""

    def test_pending_then_confirmed(self, ledger: Ledger) -> None:
        ledger.persist_batch(record(0), [image("a"), image("b")], [], 2.0, run=1)
        ledger.persist_batch(record(1, payload=b"bits"), [image("c", "val")], [], 2.0, run=1)
        assert [r.seq for r in ledger.pending("job")] == [0, 1]
        assert ledger.pending("job")[1].payload == b"bits"
        assert ledger.next_seq("job") == 2 and ledger.next_seq("other") == 0
        ledger.mark_confirmed("job", 0)
        assert [r.seq for r in ledger.pending("job")] == [1]
        totals = ledger.totals("job")
        assert (totals.batches, totals.images_released, totals.train_images, totals.bytes_sent) == (1, 2, 2, 6)
        assert totals.confirmed_seqs_contiguous
        ledger.mark_confirmed("job", 1)
        totals = ledger.totals("job")
        assert (totals.batches, totals.val_images, totals.bytes_sent) == (2, 2, 6 + 6 + 4)
        rows = sqlite3.connect(ledger.path).execute("SELECT COUNT(body), COUNT(payload) FROM batches").fetchall()
        assert rows == [(0, 0)]

    def test_gap_is_reported(self, ledger: Ledger) -> None:
        ledger.persist_batch(record(0), [image("a")], [], None, run=1)
        ledger.persist_batch(record(1), [image("b")], [], None, run=1)
        ledger.mark_confirmed("job", 1)
        assert not ledger.totals("job").confirmed_seqs_contiguous

    def test_release_and_batch_are_one_transaction(self, ledger: Ledger) -> None:
        """If recording an image fails, the batch is not in the outbox either (and vice versa)."""
        ledger.persist_batch(record(0), [image("a")], [], 1.0, run=1)
        with pytest.raises(sqlite3.IntegrityError):
            ledger.persist_batch(record(1), [image("b"), image("b")], [], 1.0, run=1)  # same image twice in a batch
        assert [r.seq for r in ledger.pending("job")] == [0]
        assert ledger.release_counts() == {"digest-a": 1}


class TestPrivacyAccounting:
    """Every release adds its ε to the image; skips are noted without spending any."""

    def test_re_release_adds_epsilon(self, ledger: Ledger) -> None:
        ledger.persist_batch(record(0), [image("a")], [], 2.5, run=1)
        ledger.persist_batch(record(1), [image("a")], [], 2.5, run=2)
        assert ledger.release_counts() == {"digest-a": 2}
        assert ledger.totals("job").epsilon_spent_max == pytest.approx(5.0)
        state = ledger.image_states(["digest-a"])["digest-a"]
        assert (state.status, state.last_run) == ("released", 2)

    def test_skip_then_release(self, ledger: Ledger) -> None:
        bad = ImageRecord("digest-x", "id-x", "train", "/x.jpg", "sig-1", reason="label file x.txt line 2 ...")
        ledger.persist_batch(None, [], [bad], 2.0, run=1)
        assert ledger.image_states(["digest-x"])["digest-x"].status == "skipped"
        assert ledger.totals("job").images_skipped == 1
        ledger.persist_batch(record(0), [image("x")], [], 2.0, run=2)
        assert ledger.image_states(["digest-x"])["digest-x"].status == "released"
        # A skip never downgrades a released image.
        ledger.persist_batch(None, [], [bad], 2.0, run=3)
        assert ledger.image_states(["digest-x"])["digest-x"].status == "released"

    def test_mechanism_none_spends_no_epsilon(self, ledger: Ledger) -> None:
        ledger.persist_batch(record(0), [image("a")], [], None, run=1)
        assert ledger.totals("job").epsilon_spent_max is None


class TestOwnership:
    """One daemon per state dir, one edge per ledger, and the image-id secret survives restarts."""

    def test_second_daemon_is_refused(self, tmp_path: Path, ledger: Ledger) -> None:
        with pytest.raises(LedgerError, match="another mistnet edge daemon"):
            Ledger(tmp_path / LEDGER_FILE, "e")
        Ledger(tmp_path / LEDGER_FILE, "e", exclusive=False).close()  # readers are fine

    def test_other_edge_is_refused(self, tmp_path: Path) -> None:
        Ledger(tmp_path / LEDGER_FILE, "e").close()
        with pytest.raises(LedgerError, match="belongs to edge 'e'"):
            Ledger(tmp_path / LEDGER_FILE, "f")

    def test_secret_and_runs_persist(self, tmp_path: Path) -> None:
        first = Ledger(tmp_path / LEDGER_FILE, "e")
        secret, run = first.secret, first.start_run()
        first.close()
        second = Ledger(tmp_path / LEDGER_FILE, "e")
        assert second.secret == secret and len(secret) == 32
        assert second.start_run() == run + 1

    def test_unwritable_state_dir(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(LedgerError, match="writable folder"):
            Ledger(blocker / LEDGER_FILE, "e")

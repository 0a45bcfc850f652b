"""Tests of producers.edge.intake: content identity, opaque ids, the split, and what the ledger lets through."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from producers.edge import intake as intake_module
from producers.edge.intake import Candidate, Intake, image_id_of, split_of
from producers.edge.ledger import LEDGER_FILE, Ledger, OutboxRecord


def write_image(root: Path, name: str, content: bytes, label: str | None = "0 0.5 0.5 0.2 0.2\n") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    path = root / "images" / name
    path.write_bytes(content)
    if label is not None:
        (root / "labels").mkdir(exist_ok=True)
        (root / "labels" / f"{Path(name).stem}.txt").write_text(label)
    return path


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / LEDGER_FILE, "e")


def scan(
    data: Path, ledger: Ledger, *, run: int = 1, re_release: bool = False, min_age_s: float = 0.0
) -> list[Candidate]:
    return Intake(data, ledger, val_fraction=0.5, re_release=re_release, run=run).scan(min_age_s).candidates


def release(ledger: Ledger, candidates: list[Candidate], seq: int, run: int = 1) -> None:
    record = OutboxRecord("job", seq, f"m{seq}", "train", len(candidates), b"b", None, None)
    ledger.persist_batch(record, [c.record() for c in candidates], [], 1.0, run)


class TestIdentity:
    """Images are known by content; the wire id is a keyed hash, stable, and never the file name."""

    def test_split_is_deterministic_and_proportional(self) -> None:
        digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
        splits = [split_of(d, 0.1) for d in digests]
        assert splits == [split_of(d, 0.1) for d in digests]
        assert 0.08 < splits.count("val") / len(splits) < 0.12
        assert all(split_of(d, 0.0) == "train" for d in digests)

    def test_image_id_is_keyed(self) -> None:
        digest = "ab" * 32
        assert image_id_of(b"k1", digest) == image_id_of(b"k1", digest)
        assert image_id_of(b"k1", digest) != image_id_of(b"k2", digest)
        assert len(image_id_of(b"k1", digest)) == 32 and digest[:32] != image_id_of(b"k1", digest)

    def test_duplicates_by_content_are_one_image(self, tmp_path: Path, ledger: Ledger) -> None:
        write_image(tmp_path, "a.jpg", b"same")
        write_image(tmp_path, "b.jpg", b"same")
        write_image(tmp_path, "c.jpg", b"other")
        found = scan(tmp_path, ledger)
        assert [c.sample.image.name for c in found] == ["a.jpg", "c.jpg"]
        assert all(int(c.image_id, 16) >= 0 for c in found)  # hex, nothing of the file name
        assert all(c.image_id == image_id_of(ledger.secret, c.digest) for c in found)


class TestEligibility:
    """Released images are not offered again (unless re_release, once per run); renames change nothing."""

    def test_released_once(self, tmp_path: Path, ledger: Ledger) -> None:
        write_image(tmp_path, "a.jpg", b"A")
        write_image(tmp_path, "b.jpg", b"B")
        release(ledger, scan(tmp_path, ledger), seq=0)
        assert scan(tmp_path, ledger) == []
        (tmp_path / "images" / "a.jpg").rename(tmp_path / "images" / "renamed.jpg")
        assert scan(tmp_path, ledger) == []
        write_image(tmp_path, "new.jpg", b"N")
        assert [c.sample.image.name for c in scan(tmp_path, ledger)] == ["new.jpg"]

    def test_re_release_once_per_run(self, tmp_path: Path, ledger: Ledger) -> None:
        write_image(tmp_path, "a.jpg", b"A")
        release(ledger, scan(tmp_path, ledger, run=1), seq=0, run=1)
        assert scan(tmp_path, ledger, run=1, re_release=True) == []
        again = scan(tmp_path, ledger, run=2, re_release=True)
        assert len(again) == 1
        release(ledger, again, seq=1, run=2)
        assert scan(tmp_path, ledger, run=2, re_release=True) == []
        assert ledger.release_counts() == {again[0].digest: 2}

    def test_skipped_retried_when_files_change(self, tmp_path: Path, ledger: Ledger) -> None:
        write_image(tmp_path, "a.jpg", b"A", label="garbage\n")
        [bad] = scan(tmp_path, ledger)
        ledger.persist_batch(None, [], [bad.record("malformed")], 1.0, run=1)
        assert scan(tmp_path, ledger) == []
        label = tmp_path / "labels" / "a.txt"
        label.write_text("0 0.5 0.5 0.2 0.2\n")
        os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
        assert [c.digest for c in scan(tmp_path, ledger)] == [bad.digest]

    def test_young_files_wait(self, tmp_path: Path, ledger: Ledger) -> None:
        write_image(tmp_path, "a.jpg", b"A")
        result = Intake(tmp_path, ledger, val_fraction=0, re_release=False, run=1).scan(min_age_s=60)
        assert (result.candidates, result.deferred) == ([], 1)

    def test_unchanged_files_are_not_hashed_again(
        self, tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_image(tmp_path, "a.jpg", b"A")
        scan(tmp_path, ledger)
        hashed: list[Path] = []
        original = intake_module.file_digest

        def counting(path: Path) -> str:
            hashed.append(path)
            return original(path)

        monkeypatch.setattr(intake_module, "file_digest", counting)
        scan(tmp_path, ledger)
        assert hashed == []

"""Finding images to release: scan the folder or index, hash contents, and keep what the ledger allows.

Images are known by the sha256 of their bytes: the same picture under two names is one image, and a
renamed file is not released again. On the wire they appear only as HMAC(edge secret, digest).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from producers.edge.ledger import ImageRecord, ImageState, Ledger, Split
from shared.dataset.sources import Sample, discover

#: Length of the opaque image id on the wire (hex characters of the HMAC).
IMAGE_ID_CHARS = 32


@dataclass(frozen=True)
class Candidate:
    """An image the ledger allows to be released now."""

    sample: Sample
    digest: str  # sha256 of the image bytes, hex
    image_id: str  # what the wire shows instead of the file name
    split: Split
    signature: str  # size and mtime of image and label file: a skipped image is retried when it changes

    def record(self, reason: str | None = None) -> ImageRecord:
        return ImageRecord(self.digest, self.image_id, self.split, str(self.sample.image), self.signature, reason)


@dataclass(frozen=True)
class ScanResult:
    candidates: list[Candidate]
    already_released: int
    deferred: int  # too new: still being written, perhaps


def split_of(digest: str, val_fraction: float) -> Split:
    """Deterministic train/val assignment from the content digest (the same image always lands the same)."""
    return "val" if int(digest[:8], 16) / 2**32 < val_fraction else "train"


def image_id_of(secret: bytes, digest: str) -> str:
    """Opaque, stable id of an image: HMAC-SHA256(edge secret, content digest), truncated hex."""
    return hmac.new(secret, digest.encode(), hashlib.sha256).hexdigest()[:IMAGE_ID_CHARS]


def file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat_signature(path: Path | None) -> tuple[str, int, int]:
    if path is None:
        return "none", 0, 0
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}", st.st_size, st.st_mtime_ns


class Intake:
    """Turns the data source into release candidates, consulting and feeding the ledger's file cache."""

    def __init__(
        self,
        source: Path,
        ledger: Ledger,
        *,
        val_fraction: float,
        re_release: bool,
        run: int,
        clock: Callable[[], float] = time.time,
    ):
        self._source = source
        self._ledger = ledger
        self._val_fraction = val_fraction
        self._re_release = re_release
        self._run = run
        self._clock = clock

    def scan(self, min_age_s: float = 0.0) -> ScanResult:
        """Images not yet released (or, with ``re_release``, not yet released in this run), path order.

        Files changed less than ``min_age_s`` ago are left for a later scan. Raises DatasetError when
        the source itself is unusable.
        """
        samples = discover(self._source)
        cached = self._ledger.cached_digests(str(s.image) for s in samples)
        now = self._clock()
        fresh: list[tuple[str, int, int, str]] = []
        found: list[tuple[Sample, str, str]] = []
        deferred = 0
        for sample in samples:
            try:
                image_sig, size, mtime_ns = _stat_signature(sample.image)
                label_sig = _stat_signature(sample.labels)[0]
            except FileNotFoundError:
                continue  # removed since discover(): nothing to release
            if now - mtime_ns / 1e9 < min_age_s:
                deferred += 1
                continue
            known = cached.get(str(sample.image))
            if known is not None and known[:2] == (size, mtime_ns):
                digest = known[2]
            else:
                digest = file_digest(sample.image)
                fresh.append((str(sample.image), size, mtime_ns, digest))
            found.append((sample, digest, f"{image_sig}|{label_sig}"))
        if fresh:
            self._ledger.remember_digests(fresh)
        states = self._ledger.image_states(digest for _, digest, _ in found)
        candidates: list[Candidate] = []
        seen: set[str] = set()
        released = 0
        for sample, digest, signature in found:
            if digest in seen:
                continue  # the same picture twice in the source
            seen.add(digest)
            if not self._eligible(states.get(digest), signature):
                released += states[digest].status == "released"
                continue
            image_id = image_id_of(self._ledger.secret, digest)
            candidates.append(Candidate(sample, digest, image_id, split_of(digest, self._val_fraction), signature))
        return ScanResult(candidates, released, deferred)

    def _eligible(self, state: ImageState | None, signature: str) -> bool:
        if state is None:
            return True
        if state.status == "skipped":
            return state.signature != signature
        return self._re_release and state.last_run != self._run

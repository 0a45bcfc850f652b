"""Tests of producers.edge.batching: pieces become batches of exactly batch_size, identical to one-shot release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from producers.edge.batching import BatchEncoder, Staged
from producers.edge.extract import Extracted
from producers.edge.intake import Candidate
from producers.edge.ledger import Split
from producers.edge.release import ReleaseSpec, batch_rng, release_batch
from shared.dataset.sources import Sample
from shared.privacy import privacy_params
from shared.wire.features import ModelSpec, WireLimits, decode_batch, unpack_bits

SHAPE = (8, 2, 2)  # 32 bits an image
SPEC = ReleaseSpec(
    job="job",
    edge="edge-a",
    model=ModelSpec(arch="yolov5n", cut_layer=4, img_size=64, extractor_sha256="0" * 64),
    privacy=privacy_params("rr-sym", 1.0),
    feature_shape=SHAPE,
    inline_threshold_bytes=1 << 20,
    uri_of=lambda key: f"s3://bucket/{key}",
)


def cands(numbers: range, split: Split = "train") -> list[Candidate]:
    return [Candidate(Sample(Path(f"/{n}.jpg"), None), f"{n:064x}", f"{n:032x}", split, "s") for n in numbers]


def piece(numbers: range, split: Split = "train", last: bool = False) -> Extracted:
    """Bits drawn from the image number; one target per image naming it in its class."""
    bits = np.stack([np.random.default_rng(n).random(SHAPE) < 0.5 for n in numbers]).astype(bool)
    targets = np.array([[i, n, 0.5, 0.5, 0.1, 0.1] for i, n in enumerate(numbers)], np.float32).reshape(-1, 6)
    return Extracted(bits, targets, cands(numbers, split), [], last_of_group=last)


def encoder(batch_size: int) -> BatchEncoder:
    return BatchEncoder(SPEC, np.random.SeedSequence(11), first_seq=5, batch_size=batch_size, clock=lambda: 1.0)


def run(enc: BatchEncoder, pieces: list[Extracted]) -> list[Staged]:
    return [staged for p in pieces for staged in enc(p)]


class TestBatchEncoder:
    """Batches hold exactly batch_size images across piece borders; bits and targets stay with their image."""

    def test_batches_across_pieces(self) -> None:
        pieces = [piece(range(0, 3)), piece(range(3, 6)), piece(range(6, 8), last=True)]
        out = run(encoder(batch_size=4), pieces)
        assert [len(s.released) for s in out] == [4, 4]
        assert [s.record.seq for s in out if s.record] == [5, 6]
        for staged in out:
            assert staged.record is not None
            batch = decode_batch(staged.record.body, WireLimits())
            numbers = [int(c.digest, 16) for c in staged.released]
            assert batch.image_ids == [f"{n:032x}" for n in numbers]
            targets = np.frombuffer(batch.targets.data, "<f4").reshape(-1, 6)
            assert targets[:, 0].tolist() == list(range(len(numbers)))
            assert targets[:, 1].tolist() == numbers

    def test_same_bytes_as_one_shot_release(self) -> None:
        """Randomising piece by piece with the batch's generator equals randomising the batch at once."""
        out = run(encoder(batch_size=5), [piece(range(0, 2)), piece(range(2, 5), last=True)])
        [staged] = out
        whole = piece(range(0, 5))
        assert whole.bits is not None and staged.record is not None
        once = release_batch(
            whole.bits, whole.targets, image_ids=[c.image_id for c in whole.released], split="train", seq=5,
            spec=SPEC, rng=batch_rng(np.random.SeedSequence(11), 5), created_at=1.0,
        )  # fmt: skip
        assert staged.record.body == once.body

    def test_mechanism_none_keeps_bits(self) -> None:
        spec = ReleaseSpec(SPEC.job, SPEC.edge, SPEC.model, privacy_params("none", None), SHAPE, 1 << 20, SPEC.uri_of)
        enc = BatchEncoder(spec, np.random.SeedSequence(1), first_seq=0, batch_size=3, clock=lambda: 1.0)
        pieces = [piece(range(0, 2)), piece(range(2, 4), last=True)]
        out = run(enc, pieces)
        got = np.concatenate(
            [
                unpack_bits(decode_batch(s.record.body, WireLimits()).payload or b"", (len(s.released), *SHAPE))
                for s in out
                if s.record
            ]
        )
        np.testing.assert_array_equal(got, np.concatenate([p.bits for p in pieces if p.bits is not None]))

    def test_split_ends_its_batch(self) -> None:
        enc = encoder(batch_size=4)
        out = run(enc, [piece(range(0, 3), "train", last=True), piece(range(3, 5), "val", last=True)])
        assert [(len(s.released), s.released[0].split) for s in out] == [(3, "train"), (2, "val")]
        with pytest.raises(ValueError, match="one split"):
            run(encoder(batch_size=4), [piece(range(0, 1), "train"), piece(range(1, 2), "val")])

    def test_skips_ride_along(self) -> None:
        enc = encoder(batch_size=2)
        bad = cands(range(9, 10))[0]
        first = Extracted(None, np.zeros((0, 6), np.float32), [], [(bad, "broken")])
        assert enc(first) == []
        [staged] = run(enc, [piece(range(0, 2))])
        assert staged.skipped == [(bad, "broken")]
        [only] = enc(Extracted(None, np.zeros((0, 6), np.float32), [], [(bad, "again")], last_of_group=True))
        assert only.record is None and only.skipped == [(bad, "again")]

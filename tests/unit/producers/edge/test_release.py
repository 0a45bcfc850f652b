"""Tests of producers.edge.release: randomised response statistics, per-batch noise, inline vs claim check, size."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from producers.edge.extract import activation_bits
from producers.edge.release import ReleaseSpec, batch_rng, release_batch
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.privacy import privacy_params
from shared.wire import names
from shared.wire.features import ModelSpec, WireLimits, decode_batch, sha256_hex, unpack_bits
from shared.yolo.artifact import load_model
from shared.yolo.network import EdgeExtractor, split_state
from shared.yolo.table import build_arch

MODEL = ModelSpec(arch="yolov5n", cut_layer=4, img_size=64, extractor_sha256="0" * 64)


def spec(
    mechanism: str = "rr-sym",
    epsilon: float | None = 4.0,
    threshold: int = 1 << 20,
    shape: tuple[int, int, int] = (64, 8, 8),
    model: ModelSpec = MODEL,
) -> ReleaseSpec:
    return ReleaseSpec(
        job="job",
        edge="edge-a",
        model=model,
        privacy=privacy_params(mechanism, epsilon),
        feature_shape=shape,
        inline_threshold_bytes=threshold,
        uri_of=lambda key: f"s3://bucket/{key}",
    )


def released_bits(bits: np.ndarray, s: ReleaseSpec, seed: int = 0, seq: int = 0) -> np.ndarray:
    record = release_batch(
        bits,
        np.zeros((0, 6), np.float32),
        image_ids=[f"{i:032x}" for i in range(len(bits))],
        split="train",
        seq=seq,
        spec=s,
        rng=batch_rng(np.random.SeedSequence(seed), seq),
        created_at=0.0,
    )
    batch = decode_batch(record.body, WireLimits())
    payload = batch.payload if batch.payload is not None else record.payload
    assert payload is not None
    return unpack_bits(payload, batch.dims)


class TestRandomisedResponse:
    """Observed keep and flip rates match p and q within 3 sigma; ε=100 rr-sym flips nothing."""

    @pytest.mark.parametrize(
        ("mechanism", "epsilon"), [("rr-sym", 1.0), ("rr-sym", 4.0), ("rr-opt", 1.0), ("rr-opt", 3.0)]
    )
    def test_rates(self, mechanism: str, epsilon: float) -> None:
        s = spec(mechanism, epsilon)
        truth = np.random.default_rng(1).random((64, 64, 8, 8)) < 0.3  # 262144 bits, 30% ones
        out = released_bits(truth, s, seed=2)
        for given, expected in ((True, s.privacy.p), (False, s.privacy.q)):
            n = int((truth == given).sum())
            observed = float(out[truth == given].mean())
            sigma = math.sqrt(expected * (1 - expected) / n)
            assert abs(observed - expected) < 3 * sigma, (given, observed, expected, sigma)

    def test_epsilon_100_keeps_every_bit(self) -> None:
        truth = np.random.default_rng(3).random((64, 64, 8, 8)) < 0.5
        np.testing.assert_array_equal(released_bits(truth, spec("rr-sym", 100.0)), truth)

    def test_none_releases_the_bits(self) -> None:
        truth = np.random.default_rng(4).random((3, 64, 8, 8)) < 0.5
        np.testing.assert_array_equal(released_bits(truth, spec("none", None)), truth)


class TestNoise:
    """Each batch draws its own noise: reproducible for a seed, different across batches and seeds."""

    def test_per_batch_generators(self) -> None:
        truth = np.zeros((4, 64, 8, 8), bool)
        s = spec("rr-sym", 1.0)
        a = released_bits(truth, s, seed=5, seq=0)
        assert np.array_equal(a, released_bits(truth, s, seed=5, seq=0))
        assert not np.array_equal(a, released_bits(truth, s, seed=5, seq=1))
        assert not np.array_equal(a, released_bits(truth, s, seed=6, seq=0))


class TestPayloadPath:
    """Below the threshold the bits go inline; otherwise a content-addressed object and a ref."""

    def test_inline_and_claim_check(self) -> None:
        bits = np.ones((4, 64, 8, 8), bool)  # 2048 payload bytes
        inline = release_batch(
            bits, np.zeros((0, 6), np.float32), image_ids=["a" * 32] * 4, split="val", seq=3,
            spec=spec("none", None, threshold=4096), rng=np.random.default_rng(0), created_at=1.0,
        )  # fmt: skip
        assert inline.payload is None and inline.object_key is None and len(inline.body) < 4096
        assert inline.message_id == names.feature_message_id("job", "edge-a", 3)
        by_ref = release_batch(
            bits, np.zeros((0, 6), np.float32), image_ids=["a" * 32] * 4, split="val", seq=3,
            spec=spec("none", None, threshold=2048), rng=np.random.default_rng(0), created_at=1.0,
        )  # fmt: skip
        assert by_ref.payload is not None
        batch = decode_batch(by_ref.body, WireLimits())
        assert batch.ref is not None and batch.payload is None
        assert batch.ref.sha256 == sha256_hex(by_ref.payload) and batch.ref.size == 2048
        assert by_ref.object_key == names.feature_object_key("job", "edge-a", batch.ref.sha256)
        assert batch.ref.uri == f"s3://bucket/{by_ref.object_key}"
        assert by_ref.wire_bytes == len(by_ref.body) + 2048

    def test_shape_must_match_the_model(self) -> None:
        with pytest.raises(ValueError, match=r"bits must be \(N, \*\(64, 8, 8\)\) bool"):
            released_bits(np.zeros((1, 32, 8, 8), bool), spec())


class TestWireSize:
    """On a real batch the bytes per image stay within 1.02x of C·H·W/8 plus the label bytes."""

    def test_real_batch(self, coco128: Path, yolov5n_pt: Path) -> None:
        img_size, n = 320, 8
        loaded = load_model(yolov5n_pt)
        extractor = EdgeExtractor(build_arch("yolov5n"), 4)
        extractor.load_state_dict(split_state(loaded.state, 0, 4))
        batch = next(iter_batches(discover(coco128)[:n], img_size, n))
        bits = activation_bits(extractor, batch.images)
        c, h, w = bits.shape[1:]
        model = MODEL.model_copy(update={"img_size": img_size})
        s = spec("rr-sym", 4.0, threshold=16 << 20, shape=(c, h, w), model=model)
        record = release_batch(
            bits, batch.targets.numpy(), image_ids=[f"{i:032x}" for i in range(n)], split="train", seq=0,
            spec=s, rng=np.random.default_rng(0), created_at=1.0,
        )  # fmt: skip
        label_bytes = batch.targets.numel() * 4
        bound = 1.02 * (n * c * h * w / 8 + label_bytes)
        assert record.payload is None  # inline at this size
        assert len(record.body) <= bound, (len(record.body), bound)
        assert len(record.body) / n < 1.01 * (c * h * w / 8 + label_bytes / n)

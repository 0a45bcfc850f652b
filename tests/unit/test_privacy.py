"""Randomised response: flip rates match p and q, and the reported guarantees follow DESIGN §3."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.privacy import Mechanism, privacy_params, randomize_bits, randomize_packed


class TestParams:
    """p, q and ε_bit follow the formulas of each mechanism."""

    def test_rr_sym(self) -> None:
        params = privacy_params("rr-sym", 8.0)
        assert params.p == pytest.approx(math.exp(4) / (1 + math.exp(4)))
        assert params.q == pytest.approx(1 - params.p)
        assert params.epsilon_bit == pytest.approx(4.0)  # Plato's ε counts two bits
        assert params.epsilon_bit == pytest.approx(math.log(params.p / params.q))
        assert params.epsilon_image(100) == pytest.approx(400.0)

    def test_rr_opt(self) -> None:
        params = privacy_params("rr-opt", 2.0)
        assert (params.p, params.q) == (0.5, pytest.approx(1 / (math.exp(2) + 1)))
        expected = max(math.log(params.p / params.q), math.log((1 - params.q) / (1 - params.p)))
        assert params.epsilon_bit == pytest.approx(expected)

    def test_none_has_no_guarantee(self) -> None:
        params = privacy_params(Mechanism.NONE, None)
        assert (params.p, params.q, params.epsilon_bit, params.epsilon_image(10)) == (1.0, 0.0, None, None)

    def test_huge_epsilon_stays_finite(self) -> None:
        assert privacy_params("rr-sym", 100.0).epsilon_bit == 50.0
        assert privacy_params("rr-sym", 5000.0).q == 0.0

    def test_rr_sym_flip_probability_does_not_round_to_zero(self) -> None:
        # 1 - p is exactly 0 in float64 at ε = 100; q must still be e^-50 / (1 + e^-50).
        params = privacy_params("rr-sym", 100.0)
        assert params.q > 0
        assert params.q == pytest.approx(math.exp(-50) / (1 + math.exp(-50)), rel=1e-12)
        assert math.log(params.p / params.q) == pytest.approx(params.epsilon_bit)
        assert privacy_params("rr-opt", 5000.0).epsilon_bit == pytest.approx(5000 - math.log(2))

    @pytest.mark.parametrize("epsilon", [0.0, -1.0, math.inf, math.nan, None])
    def test_bad_epsilon(self, epsilon: float | None) -> None:
        with pytest.raises(ValueError, match="epsilon"):
            privacy_params("rr-sym", epsilon)


class TestRandomize:
    """Observed keep and flip rates match p and q within 3 sigma (fixed seeds)."""

    @pytest.mark.parametrize(("mechanism", "epsilon"), [("rr-sym", 2.0), ("rr-sym", 6.0), ("rr-opt", 1.0)])
    def test_rates(self, mechanism: str, epsilon: float) -> None:
        params = privacy_params(mechanism, epsilon)
        bits = np.random.default_rng(0).random((8, 64, 40, 40)) > 0.4
        out = randomize_bits(bits, params, np.random.default_rng(1))
        assert out.shape == bits.shape and out.dtype == np.bool_
        ones, zeros = bits.sum(), (~bits).sum()
        keep_rate = (out & bits).sum() / ones
        flip_rate = (out & ~bits).sum() / zeros
        assert abs(keep_rate - params.p) < 3 * math.sqrt(params.p * (1 - params.p) / ones)
        assert abs(flip_rate - params.q) < 3 * math.sqrt(params.q * (1 - params.q) / zeros)

    def test_epsilon_100_flips_nothing(self) -> None:
        bits = np.random.default_rng(0).random((4, 64, 80, 80)) > 0.5
        out = randomize_bits(bits, privacy_params("rr-sym", 100.0), np.random.default_rng(2))
        assert np.array_equal(out, bits)

    def test_same_seed_same_output_other_seed_differs(self) -> None:
        bits = np.zeros((1000,), dtype=bool)
        params = privacy_params("rr-sym", 1.0)
        a = randomize_bits(bits, params, np.random.default_rng(5))
        assert np.array_equal(a, randomize_bits(bits, params, np.random.default_rng(5)))
        assert not np.array_equal(a, randomize_bits(bits, params, np.random.default_rng(6)))

    def test_refuses_non_bool(self) -> None:
        with pytest.raises(TypeError, match="bool"):
            randomize_bits(np.zeros(4), privacy_params("rr-sym", 1.0), np.random.default_rng(0))


class TestRandomizePacked:
    """Packed rows: exact flip rates in the sparse and dense regimes, pieces compose, pad bits stay 0."""

    @pytest.mark.parametrize(
        ("mechanism", "epsilon"), [("rr-sym", 10.0), ("rr-sym", 3.0), ("rr-opt", 6.0), ("rr-opt", 1.0)]
    )
    def test_rates(self, mechanism: str, epsilon: float) -> None:
        params = privacy_params(mechanism, epsilon)
        bits = np.random.default_rng(0).random((16, 64 * 40 * 40)) > 0.4
        out = np.unpackbits(randomize_packed(np.packbits(bits, axis=1), params, np.random.default_rng(1)), axis=1)
        released = out.view(np.bool_)
        for given, expected in ((True, params.p), (False, params.q)):
            n = int((bits == given).sum())
            observed = float(released[bits == given].mean())
            assert abs(observed - expected) < 3 * math.sqrt(expected * (1 - expected) / n), (given, observed)

    @pytest.mark.parametrize(("mechanism", "epsilon"), [("rr-sym", 10.0), ("rr-sym", 2.0), ("rr-opt", 6.0)])
    def test_rows_in_pieces_equal_one_call(self, mechanism: str, epsilon: float) -> None:
        params = privacy_params(mechanism, epsilon)
        packed = np.packbits(np.random.default_rng(2).random((5, 4096)) > 0.5, axis=1)
        once = randomize_packed(packed, params, np.random.default_rng(3))
        rng = np.random.default_rng(3)
        pieces = np.concatenate([randomize_packed(packed[:2], params, rng), randomize_packed(packed[2:], params, rng)])
        np.testing.assert_array_equal(once, pieces)

    @pytest.mark.parametrize(("mechanism", "epsilon"), [("rr-sym", 0.5), ("rr-sym", 12.0), ("rr-opt", 12.0)])
    def test_pad_bits_stay_zero(self, mechanism: str, epsilon: float) -> None:
        packed = np.packbits(np.ones((200, 13), dtype=bool), axis=1)  # 13 bits in 2 bytes: 3 pad bits a row
        out = randomize_packed(packed, privacy_params(mechanism, epsilon), np.random.default_rng(4), bits=13)
        assert out.shape == packed.shape and not (out[:, 1] & 0b111).any()

"""Local differential privacy for binarised features: randomised response per bit, and its accounting.

Every released bit ``b = (activation > 0)`` goes through randomised response: a 1 stays 1 with
probability ``p``, a 0 becomes 1 with probability ``q``. The per-bit guarantee is
``ε_bit = max(ln(p/q), ln((1-q)/(1-p)))``; one image changes all ``r`` bits it releases, so its bound
is ``r·ε_bit``. Labels and boxes are not randomised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

#: Uniforms drawn at a time; bounds the temporary float32 buffer to 16 MiB (a multiple of 8: whole bytes).
_CHUNK_BITS = 1 << 22
#: Flip probabilities at or below this are drawn sparsely (a binomial count at uniform positions).
#: numpy draws distinct positions in O(count) only while count <= n/50 (Floyd's algorithm).
_SPARSE_BELOW = 1 / 64


class Mechanism(StrEnum):
    """How bits are randomised before release."""

    RR_SYM = "rr-sym"  # symmetric randomised response, Plato/Sedna compatible
    RR_OPT = "rr-opt"  # optimised unary encoding
    NONE = "none"  # bits only, no randomisation: no differential privacy


@dataclass(frozen=True)
class PrivacyParams:
    """A mechanism with its configured ε and the resulting keep/flip probabilities."""

    mechanism: Mechanism
    epsilon: float | None
    p: float  # P(release 1 | bit 1)
    q: float  # P(release 1 | bit 0)
    #: Per-bit guarantee max(ln(p/q), ln((1-q)/(1-p))), computed in log space so that it stays
    #: exact where p or q round to 1 or 0; None when there is none (mechanism ``none``).
    epsilon_bit: float | None

    def epsilon_image(self, bits_per_image: int) -> float | None:
        """Bound for one image whose every one of ``bits_per_image`` released bits it can change."""
        eb = self.epsilon_bit
        return None if eb is None else eb * bits_per_image

    def to_wire(self, bits_per_image: int) -> dict[str, object]:
        """The privacy block carried in every feature message and event."""
        return {
            "mechanism": self.mechanism.value,
            "epsilon": self.epsilon,
            "p": self.p,
            "q": self.q,
            "epsilon_bit": self.epsilon_bit,
            "epsilon_image": self.epsilon_image(bits_per_image),
            "bits_per_image": bits_per_image,
            "labels_in_clear": True,
        }


def _log1p_exp(x: float) -> float:
    """ln(1 + e^x) without overflow."""
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def privacy_params(mechanism: Mechanism | str, epsilon: float | None) -> PrivacyParams:
    """Keep/flip probabilities for ``mechanism`` at the configured ``epsilon``.

    ``rr-sym``: p = e^(ε/2) / (1 + e^(ε/2)), q = 1 - p (Plato's ε counts two bits, so ε_bit = ε/2).
    ``rr-opt``: p = 1/2, q = 1 / (e^ε + 1). ``none``: p = 1, q = 0.
    """
    mech = Mechanism(mechanism)
    if mech is Mechanism.NONE:
        return PrivacyParams(mech, None, 1.0, 0.0, None)
    if epsilon is None or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a finite number > 0 for mechanism {mech.value}, got {epsilon}")
    if mech is Mechanism.RR_SYM:
        # 1 / (1 + e^-x) is e^x / (1 + e^x) without overflow for large ε.
        # q = e^-x / (1 + e^-x) directly: 1 - p would round to 0 once ε/2 passes ~37.
        p = 1.0 / (1.0 + math.exp(-epsilon / 2))
        q = 1.0 / (1.0 + math.exp(epsilon / 2)) if epsilon / 2 < 700 else 0.0
        return PrivacyParams(mech, epsilon, p, q, epsilon / 2)
    # ln(p/q) = ln((e^ε + 1) / 2); ln((1-q)/(1-p)) = ln(2 e^ε / (e^ε + 1)).
    log_sum = _log1p_exp(epsilon)
    epsilon_bit = max(log_sum - math.log(2), math.log(2) + epsilon - log_sum)
    return PrivacyParams(mech, epsilon, 0.5, math.exp(-log_sum), epsilon_bit)


def randomize_bits(bits: np.ndarray, params: PrivacyParams, rng: np.random.Generator) -> np.ndarray:
    """Randomised response on a bool array of any shape; returns a new bool array of that shape.

    Rows along the first axis draw their noise in turn (see :func:`randomize_packed`).
    """
    if bits.dtype != np.bool_:
        raise TypeError(f"bits must be a bool array, got {bits.dtype}")
    if bits.size == 0:
        return bits.copy()
    rows = bits.reshape(bits.shape[0] if bits.ndim > 1 else 1, -1)
    width = rows.shape[1]
    packed = randomize_packed(np.packbits(rows, axis=1), params, rng, bits=width)
    return np.unpackbits(packed, axis=1, count=width).view(np.bool_).reshape(bits.shape)


def randomize_packed(
    packed: np.ndarray, params: PrivacyParams, rng: np.random.Generator, *, bits: int | None = None
) -> np.ndarray:
    """Randomised response on ``(R, B) uint8`` rows of packed bits (``np.packbits`` order); a new array.

    ``bits``: the real bits of a row (default ``8·B``); pad bits at a row's end stay 0. Each bit flips
    independently: 0 -> 1 with probability ``q``, 1 -> 0 with ``1 - p``. Where the flip probability is
    small the flips are drawn exactly as they are distributed, a binomial count of them at distinct
    uniform positions (O(flips), not O(bits)); otherwise one float32 uniform per bit decides (2^-24
    resolution). Rows draw their noise one after another, so rows randomised over several calls with
    one generator get exactly what a single call would give them.
    """
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise TypeError(f"packed bits must be a 2-D uint8 array, got {packed.ndim}-D {packed.dtype}")
    width = packed.shape[1] * 8 if bits is None else bits
    if not (packed.shape[1] - 1) * 8 < width <= packed.shape[1] * 8:
        raise ValueError(f"{width} bits do not fill rows of {packed.shape[1]} bytes")
    out = packed.copy()
    if params.mechanism is Mechanism.NONE or width == 0:
        return out
    sparse = params.q <= _SPARSE_BELOW
    for row in out:
        if sparse:
            _flip_sparse(row, width, params, rng)
        else:
            _flip_dense(row, width, params, rng)
    return out


def _flip_sparse(row: np.ndarray, width: int, params: PrivacyParams, rng: np.random.Generator) -> None:
    """In place: i.i.d. Bernoulli(q) flips drawn as Binomial(width, q) distinct uniform positions."""
    if params.mechanism is Mechanism.RR_OPT:
        # Ones are kept with p = 1/2: a random bit each (pad bits stay 0: they are 0 in ``row``).
        original = row.copy()
        row &= np.frombuffer(rng.bytes(row.size), dtype=np.uint8)
    count = int(rng.binomial(width, params.q))
    if count == 0:
        return
    positions = rng.choice(width, size=count, replace=False, shuffle=False)
    where, value = positions >> 3, (0x80 >> (positions & 7)).astype(np.uint8)
    if params.mechanism is Mechanism.RR_SYM:
        np.bitwise_xor.at(row, where, value)  # p = 1 - q: ones and zeros flip alike
    else:
        zero = (original[where] & value) == 0  # only zeros turn into ones; ones were decided above
        np.bitwise_or.at(row, where[zero], value[zero])


def _flip_dense(row: np.ndarray, width: int, params: PrivacyParams, rng: np.random.Generator) -> None:
    """In place: one float32 uniform per bit, ``_CHUNK_BITS`` at a time (bounded temporary memory)."""
    q = np.float32(params.q)
    for start in range(0, width, _CHUNK_BITS):
        count = min(_CHUNK_BITS, width - start)
        segment = row[start // 8 : (start + count + 7) // 8]
        bits = np.unpackbits(segment, count=count).view(np.bool_)
        u = rng.random(count, dtype=np.float32)
        if params.mechanism is Mechanism.RR_SYM:
            released = bits ^ (u < q)
        else:
            released = (u < q) | (bits & (u < np.float32(params.p)))
        segment[:] = np.packbits(released)

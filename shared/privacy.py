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

#: Uniforms drawn at a time; bounds the temporary float32 buffer to 16 MiB.
_CHUNK_BITS = 1 << 22


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
        p = 1.0 / (1.0 + math.exp(-epsilon / 2))
        return PrivacyParams(mech, epsilon, p, 1.0 - p, epsilon / 2)
    # ln(p/q) = ln((e^ε + 1) / 2); ln((1-q)/(1-p)) = ln(2 e^ε / (e^ε + 1)).
    log_sum = _log1p_exp(epsilon)
    epsilon_bit = max(log_sum - math.log(2), math.log(2) + epsilon - log_sum)
    return PrivacyParams(mech, epsilon, 0.5, math.exp(-log_sum), epsilon_bit)


def randomize_bits(bits: np.ndarray, params: PrivacyParams, rng: np.random.Generator) -> np.ndarray:
    """Randomised response on a bool array of any shape; returns a new bool array of that shape.

    Uniforms are float32, so probabilities are applied at 2^-24 resolution (a flip probability
    below that is never drawn: ε = 100 with ``rr-sym`` releases the bits unchanged).
    """
    if bits.dtype != np.bool_:
        raise TypeError(f"bits must be a bool array, got {bits.dtype}")
    if params.mechanism is Mechanism.NONE:
        return bits.copy()
    flat = bits.reshape(-1)
    out = np.empty_like(flat)
    p, q = np.float32(params.p), np.float32(params.q)
    for start in range(0, flat.size, _CHUNK_BITS):
        chunk = flat[start : start + _CHUNK_BITS]
        u = rng.random(chunk.size, dtype=np.float32)
        out[start : start + chunk.size] = np.where(chunk, u < p, u < q)
    return out.reshape(bits.shape)

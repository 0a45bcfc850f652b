"""What the attacker sees in each audited setting: the released bits of a mechanism at an ε, or float features.

A setting is a :class:`~shared.privacy.PrivacyParams` (the deployed release: ``x > 0`` then randomised
response), or :data:`FLOAT_CEILING`, the un-binarised activations, which MistNet never releases: the
attack on them is the reference ceiling that shows what binarisation alone removes.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch

from shared.privacy import Mechanism, PrivacyParams, privacy_params, randomize_bits

FLOAT_CEILING: Final = "float"
Setting = PrivacyParams | str  # a PrivacyParams, or FLOAT_CEILING


def parse_settings(text: str) -> list[PrivacyParams]:
    """``"none,rr-sym:8,rr-opt:2"`` -> mechanisms at their ε; ``none`` (bits only) takes no ε."""
    settings: list[PrivacyParams] = []
    choices = ", ".join(m.value for m in Mechanism)
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        name, _, value = token.partition(":")
        try:
            mechanism = Mechanism(name)
        except ValueError:
            raise ValueError(f"setting {token!r}: mechanism must be one of {choices}") from None
        if mechanism is Mechanism.NONE:
            if value:
                raise ValueError(f"setting {token!r}: mechanism none releases plain bits and takes no ε; write 'none'")
            settings.append(privacy_params(mechanism, None))
            continue
        try:
            epsilon = float(value)
        except ValueError:
            raise ValueError(f"setting {token!r}: write MECHANISM:EPSILON with a number, e.g. rr-sym:8") from None
        settings.append(privacy_params(mechanism, epsilon))
    if not settings:
        raise ValueError(f"no settings in {text!r}: give e.g. 'none,rr-sym:8,rr-sym:4'")
    return settings


def setting_label(setting: Setting) -> str:
    """Human name: ``float (ceiling)``, ``none (ε=∞)``, ``rr-sym ε=8``."""
    if isinstance(setting, str):
        return "float (ceiling)"
    if setting.mechanism is Mechanism.NONE:
        return "none (ε=∞)"
    return f"{setting.mechanism.value} ε={setting.epsilon:g}"


def release(activations: torch.Tensor, setting: Setting, rng: np.random.Generator) -> torch.Tensor:
    """``(N, C, H, W) float32`` activations -> what the edge would release, as ``float32`` (bits in {0, 1}).

    Each call draws fresh randomised-response noise from ``rng``, as each release of an image would.
    """
    if isinstance(setting, str):
        if setting != FLOAT_CEILING:
            raise ValueError(f"unknown setting {setting!r}: give PrivacyParams or {FLOAT_CEILING!r}")
        return activations.clone()
    bits = (activations > 0).numpy()
    return torch.from_numpy(randomize_bits(bits, setting, rng)).float()

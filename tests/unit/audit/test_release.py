"""What the attacker sees per setting: parsed from the CLI string, released as the edge would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mistnet.audit.release import FLOAT_CEILING, parse_settings, release, setting_label
from shared.privacy import Mechanism, privacy_params


class TestParseSettings:
    """``none,rr-sym:8,rr-opt:2`` becomes mechanisms at their ε; mistakes are explained."""

    def test_parses(self) -> None:
        settings = parse_settings("none, rr-sym:8,rr-opt:2.5,")
        assert [(s.mechanism, s.epsilon) for s in settings] == [
            (Mechanism.NONE, None),
            (Mechanism.RR_SYM, 8.0),
            (Mechanism.RR_OPT, 2.5),
        ]
        assert [setting_label(s) for s in settings] == ["none (ε=∞)", "rr-sym ε=8", "rr-opt ε=2.5"]
        assert setting_label(FLOAT_CEILING) == "float (ceiling)"

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("rr-foo:1", "mechanism must be one of"),
            ("rr-sym", "MECHANISM:EPSILON"),
            ("rr-sym:x", "MECHANISM:EPSILON"),
            ("none:3", "takes no ε"),
            ("rr-sym:-1", "epsilon must be a finite number > 0"),
            (" , ", "no settings"),
        ],
    )
    def test_refuses(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_settings(text)


class TestRelease:
    """Bits are x > 0 then randomised response with fresh noise per call; float features pass unchanged."""

    acts = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(0))

    def test_none_is_the_bits(self) -> None:
        out = release(self.acts, privacy_params("none", None), np.random.default_rng(0))
        assert out.dtype == torch.float32
        assert torch.equal(out, (self.acts > 0).float())

    def test_float_ceiling_is_the_activations(self) -> None:
        out = release(self.acts, FLOAT_CEILING, np.random.default_rng(0))
        assert torch.equal(out, self.acts) and out is not self.acts

    def test_rr_sym_flips_at_its_rate_with_fresh_noise(self) -> None:
        params = privacy_params("rr-sym", 2.0)  # keeps each bit with p = 0.731
        rng = np.random.default_rng(1)
        first, second = release(self.acts, params, rng), release(self.acts, params, rng)
        bits = (self.acts > 0).float()
        kept = float((first == bits).float().mean())
        assert kept == pytest.approx(params.p, abs=0.03)  # 4096 bits: 3 sigma is 0.021
        assert not torch.equal(first, second)

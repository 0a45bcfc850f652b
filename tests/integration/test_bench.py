"""``mistnet bench --quick`` (the CI smoke test): every figure of DESIGN §9 is measured and reported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mistnet.bench.report import FIGURE_KEYS
from tests.conftest import ASSETS
from tests.integration.conftest import S3_ADMIN, S3_URL

pytestmark = [pytest.mark.services, pytest.mark.slow]


class TestBenchQuick:
    """The quick bench runs against the real services and its JSON holds every figure (bars are not asserted)."""

    @pytest.mark.timeout(900)
    def test_every_figure(self, tmp_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MISTNET_")}
        env.update(
            {
                "MISTNET_ASSETS": str(ASSETS),
                "S3_ENDPOINT_URL": S3_URL,
                "ACCESS_KEY_ID": S3_ADMIN[0],
                "SECRET_ACCESS_KEY": S3_ADMIN[1],
            }
        )
        out = tmp_path / "bench.md"
        done = subprocess.run(
            [sys.executable, "-m", "mistnet.cli", "bench", "--quick", "--json", "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["quick"] is True
        assert set(report["figures"]) == set(FIGURE_KEYS)
        for key, figure in report["figures"].items():
            assert isinstance(figure["measured"], float | int) and math.isfinite(figure["measured"]), key
            assert figure["measured"] > 0, key
            assert {"bar", "met", "unit", "detail"} <= set(figure), key
        table = out.read_text()
        assert "| figure | measured | bar | met? |" in table
        assert all(figure["title"] in table for figure in report["figures"].values())

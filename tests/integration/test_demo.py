"""``mistnet demo`` runs a whole job on this machine and writes its report (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistnet.cli import main
from tests.conftest import ASSETS


class TestDemo:
    """Two edge daemons and the cloud complete a job; the report shows mAP per round."""

    def test_tiny_demo(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(
            [
                "demo",
                "--assets",
                str(ASSETS),
                "--workdir",
                str(tmp_path / "demo"),
                "--images",
                "24",
                "--held-out",
                "8",
                "--img-size",
                "64",
                "--rounds",
                "2",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--json",
            ]
        )
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        summary = json.loads(captured.out)
        assert [row["round"] for row in summary["rounds"]] == [1, 2]
        assert all(row["public_map50"] is not None for row in summary["rounds"])
        report = Path(summary["report"])
        text = report.read_text()
        assert "| round |" in text and "ε_bit" in text and "Labels and boxes travel in clear" in text
        assert (report.parent / "rounds.png").stat().st_size > 1000
        assert (report.parent / "detection.png").is_file()
        assert (tmp_path / "demo" / "model" / "model.safetensors").is_file()

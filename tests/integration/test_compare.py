"""``mistnet compare`` trains every kind of arm on the same partitions and reports them side by side (tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistnet.cli import main
from tests.conftest import ASSETS

pytestmark = [pytest.mark.services, pytest.mark.slow]


class TestCompare:
    """Centralised, MistNet (through the real system) and FedAvg (through the real system) in one report."""

    @pytest.mark.timeout(600)
    def test_three_arms(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        out = tmp_path / "compare"
        code = main(
            [
                "compare",
                "--assets",
                str(ASSETS),
                "--out",
                str(out),
                "--arms",
                "centralized,mistnet:rr-sym:8,fedavg",
                "--images",
                "24",
                "--held-out",
                "6",
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
        assert code == 0, captured.err[-3000:]
        arms = {arm["arm"]: arm for arm in json.loads(captured.out.strip().splitlines()[-1])}
        assert set(arms) == {"centralized", "mistnet rr-sym ε=8", "fedavg"}, list(arms)
        by_kind = {arm["kind"]: arm for arm in arms.values()}
        assert set(by_kind) == {"centralized", "mistnet", "fedavg"}
        for arm in by_kind.values():
            trained = [r for r in arm["rounds"] if r["round"] > 0]
            assert [r["round"] for r in trained] == [1, 2], arm["arm"]
            assert all(r["map50"] is not None and 0 <= r["map50"] <= 1 for r in trained), arm["arm"]

        mistnet, fedavg = by_kind["mistnet"], by_kind["fedavg"]
        assert mistnet["privacy"]["mechanism"] == "rr-sym" and mistnet["privacy"]["epsilon"] == 8
        # MistNet edges upload their features once and download nothing; FedAvg edges move a model every round.
        first, second = (r for r in mistnet["rounds"] if r["round"] > 0)
        assert sum(first["up_bytes"].values()) > 0 and sum(second["up_bytes"].values()) == 0
        assert all(sum(r["down_bytes"].values()) == 0 for r in mistnet["rounds"] if r["round"] > 0)
        for row in (r for r in fedavg["rounds"] if r["round"] > 0):
            assert len(row["up_bytes"]) == 2 and all(v > 0 for v in row["up_bytes"].values())
            assert len(row["down_bytes"]) == 2 and all(v > 0 for v in row["down_bytes"].values())
            assert all(v > 0 for v in row["edge_flops"].values())

        report = (out / "README.md").read_text()
        assert "mistnet compare" in report and "fedavg" in report.lower()
        assert (out / "compare.png").stat().st_size > 1000
        assert json.loads((out / "results.json").read_text())[0]["arm"] in arms

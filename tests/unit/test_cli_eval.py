"""``mistnet eval``: JSON metrics of the full model and of the split pipeline on a few COCO128 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistnet.cli import main


@pytest.fixture(scope="module")
def tiny_index(coco128: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    images = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:6]
    index = tmp_path_factory.mktemp("data") / "val.txt"
    index.write_text("".join(f"{p}\n" for p in images))
    return index


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main(["eval", *args, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


class TestEvalCommand:
    """The full model and the float split agree; binarising costs accuracy; bad input is named."""

    def test_full_split_and_bits(self, capsys: pytest.CaptureFixture[str], tiny_index: Path, yolov5n_pt: Path) -> None:
        common = ("--weights", str(yolov5n_pt), "--data", str(tiny_index), "--img-size", "256", "--batch-size", "3")
        full = _eval(capsys, *common)
        for key in ("map50", "map50_95", "precision", "recall", "images", "instances"):
            assert key in full
        assert full["images"] == 6 and isinstance(full["instances"], int) and full["instances"] > 0
        split = _eval(capsys, *common, "--cut-layer", "4", "--encoding", "none")
        assert split["map50"] == full["map50"] and split["map50_95"] == full["map50_95"]
        bits = _eval(capsys, *common, "--cut-layer", "4", "--encoding", "bits")
        assert isinstance(full["map50"], float) and isinstance(bits["map50"], float)
        assert bits["map50"] < full["map50"]

    def test_invalid_cut_and_missing_data(
        self, capsys: pytest.CaptureFixture[str], yolov5n_pt: Path, tmp_path: Path, tiny_index: Path
    ) -> None:
        assert main(["eval", "--weights", str(yolov5n_pt), "--data", str(tiny_index), "--cut-layer", "7"]) == 2
        assert "valid cut layers are 1..4" in capsys.readouterr().err
        assert main(["eval", "--weights", str(yolov5n_pt), "--data", str(tmp_path / "none")]) == 2
        assert str(tmp_path / "none") in capsys.readouterr().err

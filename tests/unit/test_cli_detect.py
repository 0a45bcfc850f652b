"""``mistnet detect``: boxes drawn on a COCO128 bus image, in original pixels, through the full model, the
split, and an artifact whose manifest names the deployed pipeline (cut layer, bits)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mistnet.cli import main
from shared.yolo.artifact import load_model, save_artifact

BUS_IMAGE = "000000000471.jpg"  # 640x427: one bus (class 5) and one small person


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _bus_label(coco128: Path, width: int, height: int) -> list[float]:
    for line in (coco128 / "labels" / "train2017" / BUS_IMAGE.replace(".jpg", ".txt")).read_text().splitlines():
        cls, cx, cy, w, h = (float(v) for v in line.split())
        if cls == 5:
            return [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
    raise AssertionError("the test image has no bus label")


class TestDetectCommand:
    """The annotated image is written and differs from the input; --json boxes match the label in pixels."""

    def test_bus(self, capsys: pytest.CaptureFixture[str], coco128: Path, yolov5n_pt: Path, tmp_path: Path) -> None:
        image = coco128 / "images" / "train2017" / BUS_IMAGE
        out = tmp_path / "out" / "bus.jpg"
        args = ["detect", "--model", str(yolov5n_pt), str(image), "--out", str(out), "--img-size", "320", "--json"]
        assert main(args) == 0
        result = json.loads(capsys.readouterr().out)
        original, drawn = cv2.imread(str(image)), cv2.imread(str(out))
        assert drawn is not None and original is not None
        assert drawn.shape == original.shape
        assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100
        assert (result["width"], result["height"]) == (640, 427)
        buses = [b for b in result["boxes"] if b["name"] == "bus"]
        assert buses and buses[0]["cls"] == 5 and buses[0]["conf"] > 0.5
        assert _iou(buses[0]["xyxy"], _bus_label(coco128, 640, 427)) > 0.7
        for box in result["boxes"]:
            x1, y1, x2, y2 = box["xyxy"]
            assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 427

    def test_split_artifact_and_errors(
        self, capsys: pytest.CaptureFixture[str], coco128: Path, yolov5n_pt: Path, tmp_path: Path
    ) -> None:
        image = str(coco128 / "images" / "train2017" / BUS_IMAGE)
        common = ["detect", "--model", str(yolov5n_pt), image, "--img-size", "256", "--json"]
        assert main([*common, "--out", str(tmp_path / "full.jpg")]) == 0
        full = json.loads(capsys.readouterr().out)
        assert main([*common, "--out", str(tmp_path / "split.png"), "--cut-layer", "4", "--encoding", "none"]) == 0
        split = json.loads(capsys.readouterr().out)
        assert split["cut_layer"] == 4 and split["boxes"] == full["boxes"]
        artifact = tmp_path / "artifact"
        loaded = load_model(yolov5n_pt, img_size=256)
        save_artifact(artifact, loaded.state, loaded.manifest.model_copy(update={"cut_layer": 4, "encoding": "bits"}))
        assert main(["detect", "--model", str(artifact), image, "--out", str(tmp_path / "bits.jpg"), "--json"]) == 0
        deployed = json.loads(capsys.readouterr().out)
        assert (deployed["cut_layer"], deployed["encoding"], deployed["img_size"]) == (4, "bits", 256)
        missing = str(tmp_path / "none.jpg")
        assert main(["detect", "--model", str(yolov5n_pt), missing, "--out", str(tmp_path / "x.jpg")]) == 2
        assert "none.jpg" in capsys.readouterr().err
        assert main([*common[:4], "--out", str(tmp_path / "y.jpg"), "--img-size", "100"]) == 2
        assert "multiple of 32" in capsys.readouterr().err

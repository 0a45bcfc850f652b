"""``mistnet audit`` from the command line: files written, JSON on stdout, bad flags refused."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mistnet.audit import main


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    main.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``run`` routes logs to the (captured) stderr; later tests must not log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class TestRun:
    """A tiny audit writes its grid, JSON and markdown; a bad setting exits 2 naming it."""

    def test_writes_report(
        self, coco128: Path, yolov5n_pt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        args = _args(
            "--weights", str(yolov5n_pt), "--data", str(coco128), "--img-size", "64", "--limit", "4",
            "--epochs", "1", "--settings", "rr-opt:1", "--no-float-ceiling", "--out", str(tmp_path), "--json",
        )  # fmt: skip
        assert main.run(args) == 0
        document = json.loads(capsys.readouterr().out)
        assert [s["label"] for s in document["settings"]] == ["rr-opt ε=1"]
        assert document["options"]["settings"] == "rr-opt:1"
        assert (tmp_path / "reconstructions.png").is_file()
        assert json.loads((tmp_path / "audit.json").read_text())["victim_images"] == 1
        assert "| rr-opt ε=1 |" in (tmp_path / "audit.md").read_text()

    def test_bad_setting(self, coco128: Path, yolov5n_pt: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = _args("--weights", str(yolov5n_pt), "--data", str(coco128), "--settings", "rr-sym:zero")
        assert main.run(args) == 2
        assert "rr-sym:zero" in capsys.readouterr().err

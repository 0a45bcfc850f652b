"""Fixtures shared by all tests: paths to the reference data, and the real services for integration tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _assets() -> Path:
    """MISTNET_ASSETS, else the reference data beside the repository."""
    if "MISTNET_ASSETS" in os.environ:
        return Path(os.environ["MISTNET_ASSETS"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


ASSETS = _assets()


@pytest.fixture(scope="session")
def coco128() -> Path:
    """The COCO128 folder (read-only); set MISTNET_ASSETS to the folder holding coco128/ and weights/."""
    path = ASSETS / "coco128"
    if not path.is_dir():
        pytest.fail(f"COCO128 not found at {path}; set MISTNET_ASSETS to the folder holding coco128/ and weights/")
    return path


@pytest.fixture(scope="session")
def yolov5n_pt() -> Path:
    """The official yolov5n checkpoint."""
    path = ASSETS / "weights" / "yolov5n.pt"
    if not path.is_file():
        pytest.fail(f"yolov5n.pt not found at {path}; set MISTNET_ASSETS to the folder holding weights/")
    return path

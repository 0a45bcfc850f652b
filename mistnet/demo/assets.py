"""Demo assets: COCO128 and yolov5n.pt from a local folder, or downloaded with sha256 verification."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHTS_URL = "https://github.com/ultralytics/yolov5/releases/download/v6.1/yolov5n.pt"
#: sha256 of the yolov5n.pt these tests and benchmarks ran with (see ../shared/data/weights/README.md).
WEIGHTS_SHA256 = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"
COCO128_URL = "https://github.com/ultralytics/yolov5/releases/download/v1.0/coco128.zip"


class AssetError(RuntimeError):
    """Assets are missing or do not match their checksums."""


@dataclass(frozen=True)
class Assets:
    coco128: Path
    weights: Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def coco128_manifest() -> dict[str, str]:
    """Relative path -> sha256 of every COCO128 image and label file."""
    text = resources.files("mistnet.demo").joinpath("coco128.sha256").read_text()
    return {line.split()[1]: line.split()[0] for line in text.splitlines() if line.strip()}


def verify_coco128(root: Path) -> None:
    """Every image and label of the manifest is present with its sha256."""
    bad = [
        rel
        for rel, digest in coco128_manifest().items()
        if not (root / rel).is_file() or sha256_file(root / rel) != digest
    ]
    if bad:
        raise AssetError(f"COCO128 at {root} does not match its manifest: {len(bad)} files differ, e.g. {bad[0]}")


def _download(url: str, target: Path) -> None:
    log.info("downloading", extra={"url": url, "to": str(target)})
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:  # noqa: S310 - fixed https URL
        shutil.copyfileobj(response, out)


def resolve_assets(assets: Path | None, cache: Path) -> Assets:
    """Use ``assets`` (holding coco128/ and weights/yolov5n.pt, or both at top level) or download into ``cache``.

    Whatever is used is checked against the checksums above; a mismatch is an error, never a warning.
    """
    if assets is not None:
        coco = next((p for p in (assets / "coco128", assets) if (p / "images").is_dir()), None)
        weights = next((p for p in (assets / "weights" / "yolov5n.pt", assets / "yolov5n.pt") if p.is_file()), None)
        if coco is None or weights is None:
            raise AssetError(f"{assets} must hold coco128/ (images/, labels/) and weights/yolov5n.pt")
    else:
        coco, weights = cache / "coco128", cache / "yolov5n.pt"
        if not weights.is_file():
            _download(WEIGHTS_URL, weights)
        if not (coco / "images").is_dir():
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "coco128.zip"
                _download(COCO128_URL, archive)
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(cache)
    if sha256_file(weights) != WEIGHTS_SHA256:
        raise AssetError(f"{weights} has sha256 {sha256_file(weights)}, expected {WEIGHTS_SHA256}")
    verify_coco128(coco)
    return Assets(coco128=coco, weights=weights)

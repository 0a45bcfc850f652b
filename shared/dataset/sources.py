"""Find image/label pairs in a YOLO folder or a Sedna txt index, and parse YOLO label files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LABEL_FIELDS = 5


class DatasetError(ValueError):
    """A dataset input (folder, index, image or label file) is missing or malformed."""


@dataclass(frozen=True)
class Sample:
    """One image and its YOLO label file; ``labels`` is None for a background image (no label file)."""

    image: Path
    labels: Path | None


def is_image(path: Path) -> bool:
    """Whether ``path`` has one of the image suffixes YOLOv5 reads (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def label_path_for(image: Path) -> Path:
    """The YOLO label path of ``image``: its last ``images`` folder becomes ``labels``, suffix ``.txt``.

    An image under no ``images`` folder gets the ``.txt`` beside it.
    """
    parts = list(image.parts)
    folders = parts[:-1]
    if "images" in folders:
        last = len(folders) - 1 - folders[::-1].index("images")
        parts[last] = "labels"
    return Path(*parts).with_suffix(".txt")


def discover(source: Path) -> list[Sample]:
    """Every image of a YOLO folder or a txt index, with its label file, sorted by image path.

    A folder may be the dataset root (holding ``images/``), an ``images/...`` subfolder, or anything
    above them; only images with an ``images`` folder in their path are taken. An index file lists one
    ``image_path [label_path]`` per line, relative to the index's folder or absolute; ``#`` starts a
    comment. Label files whose image is absent are never read.
    """
    if source.is_dir():
        samples = _discover_folder(source)
    elif source.is_file():
        if source.suffix.lower() != ".txt":
            raise DatasetError(
                f"dataset source {source} is a file but not a .txt index: "
                "give a YOLO folder (with images/ and labels/) or a .txt list of image paths"
            )
        samples = _discover_index(source)
    else:
        raise DatasetError(
            f"dataset source {source} does not exist: "
            "give a YOLO folder (with images/ and labels/) or a .txt list of image paths"
        )
    return sorted(samples, key=lambda sample: str(sample.image))


def _discover_folder(root: Path) -> list[Sample]:
    samples = []
    for path in root.rglob("*"):
        if is_image(path) and "images" in path.parts[:-1] and path.is_file():
            labels = label_path_for(path)
            samples.append(Sample(path, labels if labels.is_file() else None))
    if not samples:
        raise DatasetError(
            f"dataset folder {root} holds no images under an images/ folder: "
            f"expected the YOLO layout images/.../*.jpg with labels/.../*.txt beside it "
            f"(image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return samples


def _discover_index(index: Path) -> list[Sample]:
    base = index.parent
    samples = []
    for line_no, raw in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{index} line {line_no}"
        if len(fields) > 2:
            raise DatasetError(
                f"{where} has {len(fields)} fields: expected 'image_path [label_path]' (no spaces in paths)"
            )
        image = base / fields[0]  # an absolute entry replaces base
        if not is_image(image):
            raise DatasetError(
                f"{where} names {image}, which is not an image: expected one of {', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        if not image.is_file():
            raise DatasetError(f"{where} names image {image}, which does not exist")
        if len(fields) == 2:
            labels = base / fields[1]
            if not labels.is_file():
                raise DatasetError(
                    f"{where} names label file {labels}, which does not exist: "
                    "leave the second column out for a background image"
                )
            samples.append(Sample(image, labels))
        else:
            derived = label_path_for(image)
            samples.append(Sample(image, derived if derived.is_file() else None))
    if not samples:
        raise DatasetError(f"dataset index {index} lists no images: expected one image path per line")
    return samples


def read_labels(path: Path | None, num_classes: int | None = None) -> np.ndarray:
    """The boxes of a YOLO label file as ``(M, 5) float32 [cls, cx, cy, w, h]``, normalised to [0, 1].

    ``None`` (background) and an empty file give ``(0, 5)``. Every line must hold an integer class
    ``>= 0`` (and ``< num_classes`` when given) and four numbers in [0, 1] with ``w, h > 0``.
    """
    if path is None:
        return np.zeros((0, LABEL_FIELDS), dtype=np.float32)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"label file {path} cannot be read as text: {err}") from err
    rows = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            rows.append(_parse_label_line(raw, num_classes, f"label file {path} line {line_no}"))
    if not rows:
        return np.zeros((0, LABEL_FIELDS), dtype=np.float32)
    return np.array(rows, dtype=np.float32)


def _parse_label_line(raw: str, num_classes: int | None, where: str) -> list[float]:
    fields = raw.split()
    if len(fields) != LABEL_FIELDS:
        raise DatasetError(f"{where} has {len(fields)} fields: expected 5 ('class cx cy w h')")
    try:
        values = [float(field) for field in fields]
    except ValueError as err:
        raise DatasetError(f"{where} holds a non-number ({raw.strip()!r}): expected 'class cx cy w h'") from err
    if not all(math.isfinite(value) for value in values):
        raise DatasetError(f"{where} holds NaN or infinity ({raw.strip()!r}): expected finite numbers")
    cls, cx, cy, w, h = values
    if cls < 0 or not cls.is_integer():
        raise DatasetError(f"{where} has class {fields[0]}: expected an integer >= 0")
    if num_classes is not None and cls >= num_classes:
        raise DatasetError(f"{where} has class {fields[0]}: expected below the {num_classes} classes")
    if not all(0.0 <= value <= 1.0 for value in (cx, cy, w, h)):
        raise DatasetError(f"{where} has a coordinate outside [0, 1] ({raw.strip()!r}): expected normalised")
    if w <= 0 or h <= 0:
        raise DatasetError(f"{where} has a box of zero width or height ({raw.strip()!r}): expected w, h > 0")
    return values

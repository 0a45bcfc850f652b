"""Tests of shared.dataset.sources: discovery of folders and txt indexes, and label parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.dataset.sources import DatasetError, Sample, discover, label_path_for, read_labels

COCO128 = Path("/work/shared/data/coco128")


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def yolo_root(tmp_path: Path) -> Path:
    """images/train/{a,b}.jpg with a label, c.PNG a background, and one orphan label."""
    root = tmp_path / "ds"
    for name in ("b.jpg", "a.jpg", "c.PNG", "notes.md"):
        touch(root / "images" / "train" / name)
    touch(root / "labels" / "train" / "a.txt", "0 0.5 0.5 0.2 0.2\n")
    touch(root / "labels" / "train" / "b.txt", "1 0.5 0.5 0.2 0.2\n")
    touch(root / "labels" / "train" / "orphan.txt", "2 0.5 0.5 0.2 0.2\n")
    return root


class TestLabelPathFor:
    """The last ``images`` folder becomes ``labels`` and the suffix ``.txt``."""

    def test_replaces_last_images_component(self) -> None:
        image = Path("/x/images/ds/images/train/a.jpeg")
        assert label_path_for(image) == Path("/x/images/ds/labels/train/a.txt")

    def test_without_images_folder_uses_sibling(self) -> None:
        assert label_path_for(Path("data/a.png")) == Path("data/a.txt")


class TestDiscoverFolder:
    """A YOLO folder yields its images sorted, with labels or None, and never an orphan label."""

    def test_root(self, yolo_root: Path) -> None:
        train = yolo_root / "images" / "train"
        labels = yolo_root / "labels" / "train"
        assert discover(yolo_root) == [
            Sample(train / "a.jpg", labels / "a.txt"),
            Sample(train / "b.jpg", labels / "b.txt"),
            Sample(train / "c.PNG", None),
        ]

    @pytest.mark.parametrize("sub", ["images", "images/train"])
    def test_images_subfolder(self, yolo_root: Path, sub: str) -> None:
        assert discover(yolo_root / sub) == discover(yolo_root)

    def test_images_outside_an_images_folder_are_ignored(self, yolo_root: Path) -> None:
        touch(yolo_root / "preview" / "z.jpg")
        assert [s.image.name for s in discover(yolo_root)] == ["a.jpg", "b.jpg", "c.PNG"]

    def test_folder_without_images_is_an_error(self, tmp_path: Path) -> None:
        touch(tmp_path / "pics" / "a.jpg")
        with pytest.raises(DatasetError, match=r"pics holds no images under an images/ folder"):
            discover(tmp_path / "pics")

    def test_missing_source_names_it(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match=r"nowhere does not exist: give a YOLO folder"):
            discover(tmp_path / "nowhere")


class TestDiscoverIndex:
    """A txt index lists images relative to itself or absolute, optionally with an explicit label path."""

    def test_relative_absolute_comments_and_label_column(self, yolo_root: Path, tmp_path: Path) -> None:
        other = touch(tmp_path / "elsewhere" / "x.txt", "3 0.5 0.5 0.1 0.1\n")
        index = touch(
            yolo_root / "train.txt",
            "# edge 1\n"
            "\n"
            "./images/train/b.jpg\n"
            f"{yolo_root / 'images/train/c.PNG'}   # absolute, background\n"
            f"images/train/a.jpg {other}\n",
        )
        train = yolo_root / "images" / "train"
        assert [(s.image.resolve(), s.labels and s.labels.resolve()) for s in discover(index)] == [
            (train / "a.jpg", other),
            (train / "b.jpg", yolo_root / "labels" / "train" / "b.txt"),
            (train / "c.PNG", None),
        ]

    def test_missing_image_names_index_and_line(self, yolo_root: Path) -> None:
        index = touch(yolo_root / "train.txt", "images/train/a.jpg\n# c\nimages/train/gone.jpg\n")
        with pytest.raises(DatasetError, match=r"train\.txt line 3 names image .*gone\.jpg, which does not exist"):
            discover(index)

    def test_missing_explicit_label_is_an_error(self, yolo_root: Path) -> None:
        index = touch(yolo_root / "train.txt", "images/train/a.jpg labels/none.txt\n")
        with pytest.raises(DatasetError, match=r"train\.txt line 1 names label file .*none\.txt"):
            discover(index)

    def test_non_image_entry_is_an_error(self, yolo_root: Path) -> None:
        index = touch(yolo_root / "train.txt", "images/train/notes.md\n")
        with pytest.raises(DatasetError, match=r"line 1 names .*notes\.md, which is not an image"):
            discover(index)


class TestReadLabels:
    """Label files parse to (M, 5) float32; each malformed line is named by file and line number."""

    def test_parses_rows(self, tmp_path: Path) -> None:
        path = touch(tmp_path / "a.txt", "0 0.5 0.5 1 1\n\n12 0.1 0.2 0.05 0.3\n")
        labels = read_labels(path, num_classes=80)
        assert labels.dtype == np.float32
        np.testing.assert_allclose(labels, [[0, 0.5, 0.5, 1, 1], [12, 0.1, 0.2, 0.05, 0.3]], rtol=1e-6)

    @pytest.mark.parametrize("path_text", [None, ""])
    def test_background_and_empty(self, tmp_path: Path, path_text: str | None) -> None:
        path = None if path_text is None else touch(tmp_path / "e.txt", path_text)
        assert read_labels(path).shape == (0, 5)

    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            ("0 0.5 0.5 0.2", "has 4 fields"),
            ("0 0.5 0.5 0.2 0.2 0.1", "has 6 fields"),
            ("0 0.5 x 0.2 0.2", "non-number"),
            ("0 0.5 nan 0.2 0.2", "NaN or infinity"),
            ("0 inf 0.5 0.2 0.2", "NaN or infinity"),
            ("-1 0.5 0.5 0.2 0.2", "class -1: expected an integer >= 0"),
            ("1.5 0.5 0.5 0.2 0.2", "class 1.5: expected an integer"),
            ("80 0.5 0.5 0.2 0.2", "class 80: expected below the 80 classes"),
            ("0 1.01 0.5 0.2 0.2", "outside \\[0, 1\\]"),
            ("0 0.5 -0.01 0.2 0.2", "outside \\[0, 1\\]"),
            ("0 0.5 0.5 0 0.2", "zero width or height"),
        ],
    )
    def test_malformed_line(self, tmp_path: Path, line: str, reason: str) -> None:
        path = touch(tmp_path / "bad.txt", f"3 0.5 0.5 0.2 0.2\n{line}\n")
        with pytest.raises(DatasetError, match=rf"label file .*bad\.txt line 2 .*{reason}"):
            read_labels(path, num_classes=80)


@pytest.mark.skipif(not COCO128.is_dir(), reason="COCO128 is not on this machine")
class TestCoco128:
    """The real COCO128 folder: 128 images, 2 backgrounds, 929 boxes, the 2 orphan labels unlisted."""

    def test_counts(self) -> None:
        samples = discover(COCO128)
        assert len(samples) == 128
        assert sorted(s.image.name for s in samples if s.labels is None) == [
            "000000000250.jpg",
            "000000000508.jpg",
        ]
        listed = {s.labels.name for s in samples if s.labels is not None}
        assert not listed & {"000000000656.txt", "000000000659.txt"}
        assert sum(len(read_labels(s.labels, num_classes=80)) for s in samples) == 929

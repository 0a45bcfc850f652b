"""The scaled YOLOv5 table and what is derived from it."""

from __future__ import annotations

import pytest

from shared.yolo.table import arch_names, build_arch, check_cut, detect_strides, feature_shape, valid_cuts


class TestBuildArch:
    """Sizes scale depth and width as the official yaml does, keeping module indices."""

    def test_yolov5n_rows_match_the_checkpoint(self) -> None:
        arch = build_arch("yolov5n")
        assert arch.num_layers == 25
        assert [r.out_channels for r in arch.rows[:10]] == [16, 32, 32, 64, 64, 128, 128, 256, 256, 256]
        assert [arch.rows[i].repeats for i in (2, 4, 6, 8, 13)] == [1, 2, 3, 1, 1]
        assert arch.rows[24].sources == (17, 20, 23)
        assert arch.rows[16].sources == (15, 4)

    def test_yolov5s_and_x_widths(self) -> None:
        assert build_arch("yolov5s").rows[3].out_channels == 128
        assert build_arch("yolov5x").rows[6].repeats == 12

    def test_unknown_name_and_bad_nc(self) -> None:
        with pytest.raises(ValueError, match="unknown architecture"):
            build_arch("yolov8n")
        with pytest.raises(ValueError, match="at least 1"):
            build_arch("yolov5n", nc=0)


class TestSplitFacts:
    """Valid cuts and feature shapes come from which outputs later rows read."""

    @pytest.mark.parametrize("name", arch_names())
    def test_valid_cuts_are_1_to_4(self, name: str) -> None:
        assert valid_cuts(build_arch(name)) == [1, 2, 3, 4]
        assert detect_strides(build_arch(name)) == [8, 16, 32]

    @pytest.mark.parametrize("cut", [0, 5, 10, 24, 25, -1])
    def test_invalid_cut_names_the_range(self, cut: int) -> None:
        with pytest.raises(ValueError, match=r"valid cut layers are 1\.\.4"):
            check_cut(build_arch("yolov5n"), cut)

    def test_feature_shapes(self) -> None:
        assert feature_shape(build_arch("yolov5n"), 4, 640) == (64, 80, 80)
        assert feature_shape(build_arch("yolov5s"), 4, 640) == (128, 80, 80)
        assert feature_shape(build_arch("yolov5n"), 1, 640) == (16, 320, 320)
        with pytest.raises(ValueError, match="multiple of 32"):
            feature_shape(build_arch("yolov5n"), 4, 100)

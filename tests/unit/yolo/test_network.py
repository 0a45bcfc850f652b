"""Segments of the model: the split is exact, the edge part is frozen."""

from __future__ import annotations

import pytest
import torch

from shared.yolo.network import EdgeExtractor, YoloSegment, build_model, split_model
from shared.yolo.table import build_arch


@pytest.fixture(scope="module")
def model() -> YoloSegment:
    torch.manual_seed(0)
    full = build_model("yolov5n")
    # Random BN statistics so that the split is exercised with non-trivial normalisation.
    for module in full.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return full.eval()


class TestSplit:
    """cloud(edge(x)) == full(x) exactly in float32 for every valid cut."""

    @pytest.mark.parametrize("cut", [1, 2, 3, 4])
    def test_split_equals_full(self, model: YoloSegment, cut: int) -> None:
        x = torch.rand(2, 3, 96, 128)
        with torch.no_grad():
            full_out = model(x)
            edge, cloud = split_model(model, cut)
            split_out = cloud.eval()(edge.extract(x))
        assert isinstance(full_out, tuple) and isinstance(split_out, tuple)
        assert torch.equal(full_out[0], split_out[0])

    def test_parameter_count_and_keys_of_yolov5n(self, model: YoloSegment) -> None:
        assert sum(p.numel() for p in model.parameters()) == 1_872_157
        keys = model.state_dict().keys()
        assert "model.0.conv.weight" in keys and "model.24.anchors" in keys and "model.24.m.2.bias" in keys
        assert len(keys) == 349

    def test_invalid_cut_refused(self, model: YoloSegment) -> None:
        with pytest.raises(ValueError, match="valid cut layers are"):
            split_model(model, 6)

    def test_segments_own_only_their_rows(self, model: YoloSegment) -> None:
        edge, cloud = split_model(model, 4)
        assert {k.split(".")[1] for k in edge.state_dict()} == {"0", "1", "2", "3"}
        assert min(int(k.split(".")[1]) for k in cloud.state_dict()) == 4


class TestEdgeExtractor:
    """The edge part stays in eval mode without gradients whatever it is asked."""

    def test_frozen(self) -> None:
        edge = EdgeExtractor(build_arch("yolov5n"), 4)
        edge.train()
        assert not edge.training
        assert all(not m.training for m in edge.modules())
        assert all(not p.requires_grad for p in edge.parameters())

    def test_extract_shape(self) -> None:
        edge = EdgeExtractor(build_arch("yolov5n"), 4)
        assert edge.extract(torch.rand(1, 3, 128, 128)).shape == (1, 64, 16, 16)

    def test_detect_output_shapes(self, model: YoloSegment) -> None:
        with torch.no_grad():
            decoded, maps = model(torch.rand(1, 3, 64, 64))  # type: ignore[misc]
        assert decoded.shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 85)
        assert [tuple(m.shape) for m in maps] == [(1, 3, 8, 8, 85), (1, 3, 4, 4, 85), (1, 3, 2, 2, 85)]

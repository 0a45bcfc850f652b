"""Fine-tuning the whole model on images, and the convolution FLOPs estimate."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from shared.dataset.sources import discover
from shared.training.flops import conv_macs_per_image, training_flops
from shared.training.full import FullTrainConfig, TrainingStoppedError, train_full
from shared.training.optim import OptimizerConfig
from shared.yolo.artifact import load_model
from shared.yolo.network import YoloSegment, build_model

CONFIG = FullTrainConfig(epochs=2, batch_size=2, img_size=64, optimizer=OptimizerConfig(), seed=1, workers=1)


@pytest.fixture(scope="module")
def pretrained(yolov5n_pt: Path) -> dict[str, torch.Tensor]:
    return load_model(yolov5n_pt).state


def fresh(state: dict[str, torch.Tensor]) -> YoloSegment:
    model = build_model()
    model.load_state_dict(state)
    return model


class TestTrainFull:
    """Seeded epochs over the images change the weights and BatchNorm statistics and report mean losses."""

    def test_trains_and_reports(self, coco128: Path, pretrained: dict[str, torch.Tensor]) -> None:
        samples = [s for s in discover(coco128) if s.labels is not None][:3]
        model = fresh(pretrained)
        steps: list[int] = []
        cpu = torch.device("cpu")
        result = train_full(model, samples, CONFIG, device=cpu, on_step=lambda _e, s, _parts: steps.append(s))
        assert (result.samples, result.images, result.steps, steps) == (3, 6, 4, [1, 2, 3, 4])
        assert len(result.epoch_losses) == 2 and all(v > 0 for v in result.losses) and result.seconds > 0
        state = model.state_dict()
        assert not torch.equal(state["model.24.m.0.weight"], pretrained["model.24.m.0.weight"])
        assert not torch.equal(state["model.0.bn.running_mean"], pretrained["model.0.bn.running_mean"])

    def test_same_seed_same_result(self, coco128: Path, pretrained: dict[str, torch.Tensor]) -> None:
        samples = [s for s in discover(coco128) if s.labels is not None][:2]
        config = FullTrainConfig(epochs=1, batch_size=1, img_size=64, optimizer=OptimizerConfig(), seed=5, workers=1)
        one = train_full(fresh(pretrained), samples, config, device=torch.device("cpu"))
        two = train_full(fresh(pretrained), samples, config, device=torch.device("cpu"))
        assert one.losses == two.losses

    def test_stop_and_bad_input(self, coco128: Path, pretrained: dict[str, torch.Tensor]) -> None:
        samples = discover(coco128)[:2]
        stop = threading.Event()
        stop.set()
        with pytest.raises(TrainingStoppedError):
            train_full(fresh(pretrained), samples, CONFIG, device=torch.device("cpu"), stop=stop)
        with pytest.raises(ValueError, match="no training images"):
            train_full(fresh(pretrained), [], CONFIG, device=torch.device("cpu"))
        with pytest.raises(ValueError, match="whole model"):
            train_full(YoloSegment(fresh(pretrained).arch, 4), samples, CONFIG, device=torch.device("cpu"))


class TestFlops:
    """yolov5n is 4.5 GFLOPs at 640 px (the official figure); training counts three forwards."""

    def test_yolov5n(self) -> None:
        model = build_model()
        macs = conv_macs_per_image(model, 640)
        assert 4.0e9 < 2 * macs < 4.8e9
        assert model.training  # mode restored
        assert conv_macs_per_image(model, 320) * 4 == pytest.approx(macs, rel=0.01)
        assert training_flops(macs, 10) == 6 * macs * 10

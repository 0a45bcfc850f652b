"""Training rounds on stored features, and checkpoints of model and optimizer without pickle."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.cloud.checkpoint import (
    OPTIMIZER_FILE,
    optimizer_from_file,
    optimizer_to_bytes,
    read_checkpoint,
    round_dir,
    write_checkpoint,
)
from consumers.cloud.store import FeatureStore, NewBatch, StoredBatch
from consumers.cloud.trainer import TrainConfig, Trainer, TrainingInterruptedError, build_optimizer, resolve_device
from shared.wire.features import pack_bits
from shared.yolo.artifact import MANIFEST_FILE, WEIGHTS_FILE, Manifest, serialize_artifact
from shared.yolo.network import YoloSegment, build_model
from shared.yolo.table import build_arch, feature_shape

IMG = 64
CUT = 4


def config(**overrides: object) -> TrainConfig:
    fields: dict[str, object] = {
        "epochs": 2,
        "batch_size": 2,
        "learning_rate": 0.01,
        "optimizer": "sgd",
        "momentum": 0.937,
        "weight_decay": 5e-4,
        "seed": 0,
        "img_size": IMG,
    }
    fields.update(overrides)
    return TrainConfig(**fields)  # type: ignore[arg-type]


def stored(tmp_path: Path) -> list[StoredBatch]:
    """Two edges' batches of features of the cloud's input shape, with one box per image."""
    chw = feature_shape(build_arch("yolov5n"), CUT, IMG)
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for seq, (edge, n) in enumerate([("edge-a", 2), ("edge-a", 1), ("edge-b", 1)]):
        bits = rng.random((n, *chw)) < 0.3
        targets = np.array([[i, i % 80, 0.5, 0.5, 0.3, 0.4] for i in range(n)], dtype=np.float32)
        store.put(NewBatch(f"m{seq}", edge, seq, "train", (n, *chw), pack_bits(bits), targets, 0, time.time()))
    return store.batches("train")


def cloud_part() -> YoloSegment:
    torch.manual_seed(0)
    return YoloSegment(build_arch("yolov5n"), CUT)


class TestTrainRound:
    """Each epoch trains every stored image once; the model changes; the loss is finite."""

    def test_round(self, tmp_path: Path) -> None:
        batches = stored(tmp_path)
        trainer = Trainer(cloud_part(), config(), torch.device("cpu"))
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        result = trainer.train_round(1, batches, threading.Event())
        assert result.log == {(e, b.id): b.shape[0] for e in (1, 2) for b in batches}
        assert result.steps == 2 * 2 and result.skipped_steps == 0
        assert result.samples_per_edge == {"edge-a": 3, "edge-b": 1}
        assert all(np.isfinite(result.losses)) and sum(result.losses) > 0
        after = trainer.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)

    def test_stop_interrupts_at_a_step_boundary(self, tmp_path: Path) -> None:
        stop = threading.Event()
        stop.set()
        trainer = Trainer(cloud_part(), config(), torch.device("cpu"))
        with pytest.raises(TrainingInterruptedError, match="round 1"):
            trainer.train_round(1, stored(tmp_path), stop)


class TestOptimizer:
    """YOLOv5's groups: decay on conv weights only; SGD is Nesterov."""

    def test_groups(self) -> None:
        model = cloud_part()
        sgd = build_optimizer(model, config())
        decay, no_decay = sgd.param_groups
        assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
        assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
        assert decay["nesterov"] and decay["momentum"] == 0.937
        adam = build_optimizer(model, config(optimizer="adam"))
        assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.937, 0.999)

    def test_cuda_without_gpu_is_refused(self) -> None:
        if torch.cuda.is_available():
            assert resolve_device("cuda").type == "cuda"
        else:
            with pytest.raises(ValueError, match="device=cuda"):
                resolve_device("cuda")
        assert resolve_device("cpu").type == "cpu"


class TestCheckpoint:
    """A checkpoint restores model and optimizer exactly; it is written atomically; old ones are pruned."""

    @pytest.mark.parametrize("kind", ["sgd", "adam"])
    def test_round_trip(self, kind: str, tmp_path: Path) -> None:
        trainer = Trainer(cloud_part(), config(optimizer=kind, epochs=1), torch.device("cpu"))
        trainer.train_round(1, stored(tmp_path), threading.Event())
        full = {**build_model().state_dict(), **trainer.model.state_dict()}
        manifest = Manifest(arch="yolov5n", nc=80, names=[str(i) for i in range(80)], img_size=IMG, cut_layer=CUT)
        weights, manifest_json = serialize_artifact(full, manifest)
        files = {
            WEIGHTS_FILE: weights,
            MANIFEST_FILE: manifest_json,
            OPTIMIZER_FILE: optimizer_to_bytes(trainer.optimizer.state_dict()),
        }
        checkpoints = tmp_path / "checkpoints"
        for round_no in (1, 2, 3):
            write_checkpoint(checkpoints, round_no, files)
        assert sorted(p.name for p in checkpoints.iterdir()) == ["round-0002", "round-0003"]
        restored = read_checkpoint(checkpoints, 3)
        assert all(torch.equal(restored.model.state[k], v) for k, v in full.items())
        fresh = Trainer(cloud_part(), config(optimizer=kind), torch.device("cpu"))
        fresh.optimizer.load_state_dict(optimizer_from_file(round_dir(checkpoints, 3) / OPTIMIZER_FILE))
        original, loaded = trainer.optimizer.state_dict(), fresh.optimizer.state_dict()
        assert original["param_groups"] == loaded["param_groups"]
        for index, entries in original["state"].items():
            for name, value in entries.items():
                assert torch.equal(loaded["state"][index][name], value), (index, name)

    def test_incomplete_checkpoint_is_refused(self, tmp_path: Path) -> None:
        write_checkpoint(tmp_path, 1, {WEIGHTS_FILE: b"x"})
        with pytest.raises(FileNotFoundError, match="incomplete"):
            read_checkpoint(tmp_path, 1)

"""The cloud's device path on every device present (CPU always; CUDA when there is one), and recomputation.

The same code runs everywhere: pinned loader buffers and non-blocking copies, mixed precision on CUDA
only. On a CPU a step must stay exactly the float32 step it was.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.cloud.batching import FeatureLoader, plan_in_order
from consumers.cloud.model import recompute_in_backward
from consumers.cloud.store import FeatureStore, NewBatch, StoredBatch
from consumers.cloud.trainer import TrainConfig, Trainer, build_optimizer
from shared.training.loss import YoloLoss
from shared.wire.features import pack_bits
from shared.yolo.network import YoloSegment
from shared.yolo.table import build_arch, feature_shape

IMG, CUT = 64, 4
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def config(**overrides: object) -> TrainConfig:
    fields: dict[str, object] = {
        "epochs": 1, "batch_size": 2, "learning_rate": 0.01, "optimizer": "sgd", "momentum": 0.937,
        "weight_decay": 5e-4, "seed": 0, "img_size": IMG,
    }  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)  # type: ignore[arg-type]


def cloud_part() -> YoloSegment:
    torch.manual_seed(0)
    return YoloSegment(build_arch("yolov5n"), CUT)


def features(n: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    chw = feature_shape(build_arch("yolov5n"), CUT, IMG)
    x = (np.random.default_rng(seed).random((n, *chw)) < 0.4).astype(np.float32)
    t = np.array([[i, i % 80, 0.5, 0.5, 0.3, 0.4] for i in range(n)], dtype=np.float32)
    return x, t


def stored(tmp_path: Path) -> list[StoredBatch]:
    store = FeatureStore(tmp_path / "store")
    x, t = features(3)
    store.put(NewBatch("m0", "edge-a", 0, "train", x.shape, pack_bits(x.astype(bool)), t, 0, time.time()))
    return store.batches("train")


@pytest.mark.parametrize("device", DEVICES)
class TestDevicePath:
    """Training steps and rounds run on each available device; mixed precision and pinning only with CUDA."""

    def test_step(self, device: str) -> None:
        trainer = Trainer(cloud_part(), config(), torch.device(device))
        before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        parts = trainer.step(*features())
        assert parts is not None and parts.dtype == np.float32 and np.isfinite(parts).all()
        assert trainer.amp == (device == "cuda") and trainer.scaler.is_enabled() == (device == "cuda")
        assert all(p.device.type == device for p in trainer.model.parameters())
        after = trainer.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)

    def test_round(self, device: str, tmp_path: Path) -> None:
        batches = stored(tmp_path)
        result = Trainer(cloud_part(), config(), torch.device(device)).train_round(1, batches, threading.Event())
        assert result.steps == 2 and result.skipped_steps == 0 and all(np.isfinite(result.losses))

    def test_loader_buffers(self, device: str, tmp_path: Path) -> None:
        batches = stored(tmp_path)
        pinned = device == "cuda"
        loader = FeatureLoader(batches, 2, pin_memory=pinned)
        steps = list(loader.steps(plan_in_order(batches, 2)))
        assert [len(s.slots) for s in steps] == [2, 1]
        assert torch.from_numpy(steps[0].features).is_pinned() == pinned


class TestCpuUnchanged:
    """On a CPU, Trainer.step is exactly the plain float32 step (no autocast, a disabled scaler), recomputing or not."""

    @pytest.mark.parametrize("recompute", [False, True])
    def test_same_weights_as_a_plain_step(self, recompute: bool) -> None:
        x, t = features()
        plain = cloud_part()
        optimizer = build_optimizer(plain, config())
        total, _ = YoloLoss(plain.detect, IMG)(plain(torch.from_numpy(x)), torch.from_numpy(t))
        optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 10.0)
        optimizer.step()
        trainer = Trainer(cloud_part(), config(recompute_activations=recompute), torch.device("cpu"))
        trainer.step(x, t)
        expected, got = plain.state_dict(), trainer.model.state_dict()
        assert all(torch.equal(expected[k], got[k]) for k in expected)


class TestRecompute:
    """Recomputing C3/SPPF activations in backward changes nothing: loss, gradients, BatchNorm buffers."""

    def test_bit_identical(self) -> None:
        x, t = torch.from_numpy(features(seed=1)[0]), torch.from_numpy(features()[1])
        reference = cloud_part().train()
        recomputed = recompute_in_backward(copy.deepcopy(reference))
        results = []
        for model in (reference, recomputed):
            total, _ = YoloLoss(model.detect, IMG)(model(x), t)  # type: ignore[arg-type]
            total.backward()  # type: ignore[no-untyped-call]
            grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
            results.append((total.item(), grads, {k: b.clone() for k, b in model.named_buffers()}))
        (loss_a, grads_a, buffers_a), (loss_b, grads_b, buffers_b) = results
        assert loss_a == loss_b
        assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
        assert all(torch.equal(buffers_a[k], buffers_b[k]) for k in buffers_a)
        assert recomputed.state_dict().keys() == reference.state_dict().keys()

"""The upper bound: all edges' training images fine-tune the full model in one place, no privacy at all."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from mistnet.compare.arms import Arm, ArmResult, RoundRow
from producers.edge.intake import file_digest, split_of
from shared.dataset.loader import iter_batches
from shared.dataset.sources import Sample
from shared.evaluation.evaluate import build_predictor, evaluate_batches
from shared.training.full import FullTrainConfig, train_full
from shared.training.optim import OptimizerConfig
from shared.yolo.artifact import load_model

log = logging.getLogger(__name__)


def train_split(samples: Sequence[Sample], val_fraction: float) -> list[Sample]:
    """The images an edge trains on: the same content-digest split the edge daemons use."""
    return [s for s in samples if split_of(file_digest(s.image), val_fraction) == "train"]


def held_out_metrics(weights: Path, held_out: Sequence[Sample], img_size: int, batch_size: int) -> tuple[float, float]:
    """mAP@0.5 and mAP@0.5:0.95 of the pretrained full model on the held-out images (round 0 of FedAvg too)."""
    model = load_model(weights, img_size).build()
    result = evaluate_batches(build_predictor(model), iter_batches(held_out, img_size, batch_size))
    return result.map50, result.map50_95


def run_centralized(
    weights: Path,
    edges: Mapping[str, Sequence[Sample]],
    held_out: Sequence[Sample],
    *,
    rounds: int,
    epochs: int,
    img_size: int,
    batch_size: int,
    learning_rate: float,
    val_fraction: float,
    seed: int = 0,
) -> ArmResult:
    """``rounds`` × ``epochs`` over the union of the edges' training images; held-out mAP after each round."""
    started = time.monotonic()
    train = [s for samples in edges.values() for s in train_split(samples, val_fraction)]
    model = load_model(weights, img_size).build()
    device = torch.device("cpu")
    upload = sum(s.image.stat().st_size + (s.labels.stat().st_size if s.labels else 0) for s in train)
    base50, base = held_out_metrics(weights, held_out, img_size, batch_size)
    rows = [RoundRow(0, base50, base, None)]
    optimizer = OptimizerConfig(learning_rate=learning_rate)
    for round_no in range(1, rounds + 1):
        round_started = time.monotonic()
        trained = train_full(
            model, train, FullTrainConfig(epochs, batch_size, img_size, optimizer, seed + round_no), device=device
        )
        model.eval()
        metrics = evaluate_batches(build_predictor(model), iter_batches(held_out, img_size, batch_size))
        rows.append(
            RoundRow(
                round=round_no,
                map50=metrics.map50,
                map50_95=metrics.map50_95,
                seconds=time.monotonic() - round_started,
                loss=sum(trained.losses),
                up_bytes={"all images": upload if round_no == 1 else 0},
                down_bytes={"all images": 0},
            )
        )
        log.info("centralized round done", extra={"round": round_no, "map50": metrics.map50})
    return ArmResult(
        arm=Arm("centralized"),
        rounds=rows,
        privacy={
            "mechanism": "none",
            "epsilon": None,
            "epsilon_bit": None,
            "epsilon_image": None,
            "note": "raw images and labels leave the edges",
        },
        edge_peak_rss={},
        wall_seconds=time.monotonic() - started,
        notes=[f"{len(train)} training images uploaded raw ({upload / 1e6:.1f} MB with labels) before round 1"],
    )

"""Each round's evaluation: the edges' released val features (private) and a labelled folder (public)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import torch

from consumers.cloud.batching import FeatureLoader, plan_in_order
from consumers.cloud.store import StoredBatch
from consumers.cloud.trainer import TrainingInterruptedError
from shared.dataset.loader import iter_batches
from shared.dataset.sources import Sample
from shared.evaluation.evaluate import build_predictor, evaluate_batches, evaluate_features
from shared.evaluation.metrics import DetectionMetrics
from shared.wire.events import ValMetrics
from shared.yolo.network import YoloSegment

T = TypeVar("T")


def _until(stop: threading.Event, items: Iterable[T]) -> Iterator[T]:
    for item in items:
        if stop.is_set():
            raise TrainingInterruptedError("evaluation stopped")
        yield item


def _val_metrics(metrics: DetectionMetrics) -> ValMetrics:
    return ValMetrics(
        map50=metrics.map50,
        map50_95=metrics.map50_95,
        precision=metrics.precision,
        recall=metrics.recall,
        val_samples=metrics.images,
    )


def evaluate_private(
    cloud: YoloSegment, batches: Sequence[StoredBatch], img_size: int, batch_size: int, stop: threading.Event
) -> ValMetrics | None:
    """mAP of the cloud part on the edges' ``split=val`` features; None when no edge released any."""
    if not batches:
        return None
    device = next(cloud.parameters()).device
    loader = FeatureLoader(batches, batch_size)
    pairs = (
        (torch.from_numpy(step.features).to(device), torch.from_numpy(step.targets))
        for step in _until(stop, loader.steps(plan_in_order(batches, batch_size)))
    )
    try:
        return _val_metrics(evaluate_features(cloud, pairs, img_size))
    finally:
        cloud.train()


def evaluate_public(
    full: YoloSegment,
    *,
    cut_layer: int | None,
    samples: Sequence[Sample],
    img_size: int,
    batch_size: int,
    stop: threading.Event,
) -> ValMetrics | None:
    """mAP of the deployed pipeline (edge part -> bits ``x > 0`` -> cloud part) on a labelled folder.

    Images are letterboxed square at ``img_size`` as the edges do; no randomisation is applied.
    ``cut_layer`` None: the whole model on the images (FedAvg's deployed pipeline).
    """
    if not samples:
        return None
    predictor = build_predictor(full, cut_layer, "none" if cut_layer is None else "bits")
    batches = iter_batches(samples, img_size, batch_size, on_error="skip", num_classes=full.arch.nc)
    return _val_metrics(evaluate_batches(predictor, _until(stop, batches)))

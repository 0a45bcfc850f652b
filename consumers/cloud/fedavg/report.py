"""What a FedAvg round says about itself, pure: its ``round.completed`` event and its artifact's manifest.

The event carries every field of MistNet's (same schema) plus FedAvg's own, so one report can read
both: per edge and round the bytes up (``bytes_received_per_edge``: update message + tensor file) and
down (``bytes_sent_down_per_edge``: global model + start-round message), and what training cost each
edge (``edge_measurements``: seconds, FLOPs estimate, peak RSS, its own count of bytes downloaded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.cloud.fedavg.store import RoundStart, StoredUpdate
from shared.config.cloud import CloudSettings
from shared.wire.events import Losses, ModelRef, PrivacySummary, RoundCompleted, ValMetrics
from shared.wire.update import FEDAVG_PRIVACY_NOTE
from shared.yolo.artifact import Manifest

SOURCE = "mistnet-cloud"
#: How integer state entries are aggregated (see shared.training.fedavg).
NUM_BATCHES_TRACKED = "max"


@dataclass(frozen=True)
class ModelInfo:
    """The job's architecture and classes, for manifests."""

    arch: str
    nc: int
    names: list[str]
    img_size: int


@dataclass(frozen=True)
class AggregatedRound:
    """What one FedAvg round did."""

    start: RoundStart
    finished_at: float
    updates: Sequence[StoredUpdate]
    weights: Mapping[str, float]
    public: ValMetrics | None
    baseline: ValMetrics | None
    stragglers: list[dict[str, Any]]
    bytes_received_before: int


def fedavg_privacy() -> PrivacySummary:
    """FedAvg has no randomisation; what its updates leak is said, not hidden."""
    return PrivacySummary.model_validate(
        {
            "mechanism": "fedavg",
            "epsilon": None,
            "epsilon_bit": None,
            "epsilon_image": None,
            "note": FEDAVG_PRIVACY_NOTE,
        }
    )


def mean_losses(updates: Sequence[StoredUpdate]) -> Losses:
    """The edges' mean training losses, weighted by their samples."""
    total = sum(u.samples for u in updates)
    parts = {
        part: sum(u.measurements["losses"][part] * u.samples for u in updates) / max(total, 1)
        for part in ("box", "obj", "cls")
    }
    return Losses(**parts)


def manifest(info: ModelInfo, job: str, round_no: int, metrics: dict[str, Any]) -> Manifest:
    """The artifact's manifest: the whole model on images (no cut, no encoding), algorithm fedavg."""
    return Manifest(
        arch=info.arch,
        nc=info.nc,
        names=info.names,
        img_size=info.img_size,
        cut_layer=None,
        encoding="none",
        privacy=fedavg_privacy().model_dump(),
        metrics=metrics,
        job=job,
        round=round_no,
        algorithm="fedavg",
    )


def round_event(settings: CloudSettings, facts: AggregatedRound, model: ModelRef) -> RoundCompleted:
    """``round.completed`` of a FedAvg round: MistNet's fields, then FedAvg's own."""
    start, updates = facts.start, facts.updates
    received = {u.edge: u.wire_bytes for u in updates}
    down = {u.edge: start.global_size + start.control_bytes for u in updates}
    bytes_received = sum(received.values())
    expected = sorted(settings.expected_edges.names or ())
    fields: dict[str, Any] = dict(
        id=f"{settings.job}.round.completed.{start.round}",
        job=settings.job,
        source=SOURCE,
        round=start.round,
        rounds=settings.rounds,
        algorithm="fedavg",
        started_at=start.started_at,
        finished_at=facts.finished_at,
        duration_s=facts.finished_at - start.started_at,
        epochs=settings.epochs,
        samples_total=sum(u.samples for u in updates),
        samples_per_edge={u.edge: u.samples for u in updates},
        losses=mean_losses(updates),
        # Edges release no val features in FedAvg: the only validation is the held-out public_val folder.
        val=facts.public,
        public_val=facts.public,
        baseline_val=facts.baseline,
        baseline_public_val=facts.baseline,
        privacy=fedavg_privacy(),
        bytes_received=bytes_received,
        bytes_received_total=facts.bytes_received_before + bytes_received,
        model=model,
        # FedAvg's own fields (readers ignore unknown ones).
        val_source="public_val" if facts.public is not None else None,
        edges_expected=expected,
        edges_reported=sorted(received),
        edges_missing=sorted(set(expected) - set(received)),
        stragglers=facts.stragglers,
        aggregation={
            "weights": dict(sorted(facts.weights.items())),
            "update": "float16 delta (local - global) of every state entry",
            "accumulation": "float32",
            "batchnorm_running_stats": "averaged",
            "num_batches_tracked": NUM_BATCHES_TRACKED,
        },
        global_model={"uri": start.global_uri, "sha256": start.global_sha256, "size": start.global_size},
        bytes_received_per_edge=received,
        bytes_sent_down=sum(down.values()),
        bytes_sent_down_per_edge=down,
        edge_measurements={u.edge: u.measurements for u in updates},
    )
    return RoundCompleted.model_validate(fields)

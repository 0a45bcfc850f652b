"""Valid example events (shared/wire/events.py) for monitor tests."""

from __future__ import annotations

from typing import Any

from shared.wire.events import EdgeDone, JobCompleted, Losses, ModelRef, PrivacySummary, RoundCompleted, ValMetrics

PRIVACY = PrivacySummary(mechanism="rr-sym", epsilon=100.0, epsilon_bit=50.0, epsilon_image=1.6e7)


def round_completed(job: str, number: int, rounds: int = 3, **overrides: Any) -> RoundCompleted:
    fields: dict[str, Any] = {
        "job": job,
        "source": "cloud",
        "round": number,
        "rounds": rounds,
        "algorithm": "mistnet",
        "started_at": 1000.0 + number * 10,
        "finished_at": 1008.0 + number * 10,
        "duration_s": 8.0,
        "epochs": 2,
        "samples_total": 120,
        "samples_per_edge": {"edge-a": 64, "edge-b": 56},
        "losses": Losses(box=0.05 / number, obj=0.04, cls=0.02),
        "val": ValMetrics(map50=0.1 * number, map50_95=0.05 * number, precision=0.5, recall=0.4, val_samples=12),
        "privacy": PRIVACY,
        "bytes_received": 3_200_000,
        "bytes_received_total": 3_200_000 * number,
        "model": ModelRef(uri=f"s3://b/{job}/models/round-{number:04d}/", sha256="ab" * 32),
    }
    fields.update(overrides)
    return RoundCompleted(**fields)


def edge_done(job: str, edge: str) -> EdgeDone:
    return EdgeDone(
        job=job,
        source=edge,
        edge=edge,
        images_released=64,
        train_images=58,
        val_images=6,
        batches=2,
        bytes_sent=1_600_000,
        privacy=PRIVACY,
    )


def job_completed(job: str, rounds: int = 3) -> JobCompleted:
    return JobCompleted(
        job=job,
        source="cloud",
        rounds=rounds,
        algorithm="mistnet",
        final_val=ValMetrics(map50=0.3, map50_95=0.15, precision=0.5, recall=0.4, val_samples=12),
        model=None,
    )

"""An edge's FedAvg round, computed: which local images train, fine-tuning the global model, the fp16 update.

The train images are the ones the MistNet path would release as ``split=train``: the same deterministic
split by content digest, so the edge's val images never train in either mode. Blocking (torch, file
reads): call from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from producers.edge.intake import file_digest, split_of
from producers.edge.ledger import Ledger
from shared.dataset.sources import Sample, discover
from shared.observability.memory import peak_rss_bytes
from shared.training.fedavg import delta_state, serialize_update
from shared.training.flops import conv_macs_per_image, training_flops
from shared.training.full import FullTrainConfig, train_full
from shared.training.optim import OptimizerConfig
from shared.wire.control import StartRound
from shared.wire.features import BlobRef, Reason, WireError
from shared.wire.update import (
    FEDAVG_PRIVACY_NOTE,
    UPDATE_TYPE,
    EdgeMeasurements,
    TrainLosses,
    UpdateMessage,
    UpdatePrivacy,
)
from shared.yolo.artifact import load_artifact_bytes

_METADATA_KEY = "mistnet.update"


def train_samples(source: Path, ledger: Ledger, val_fraction: float) -> list[Sample]:
    """Local images of ``split=train`` (by content digest, as the MistNet path splits), one per picture."""
    samples = discover(source)
    cached = ledger.cached_digests(str(s.image) for s in samples)
    fresh: list[tuple[str, int, int, str]] = []
    chosen: list[Sample] = []
    seen: set[str] = set()
    for sample in samples:
        try:
            stat = sample.image.stat()
        except FileNotFoundError:
            continue
        known = cached.get(str(sample.image))
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            digest = known[2]
        else:
            digest = file_digest(sample.image)
            fresh.append((str(sample.image), stat.st_size, stat.st_mtime_ns, digest))
        if digest not in seen and split_of(digest, val_fraction) == "train":
            chosen.append(sample)
        seen.add(digest)
    if fresh:
        ledger.remember_digests(fresh)
    return chosen


@dataclass(frozen=True)
class LocalUpdate:
    """The update file of one round and what computing it cost."""

    payload: bytes
    samples: int
    losses: tuple[float, float, float]
    steps: int
    skipped_steps: int
    train_s: float
    flops: float
    peak_rss_bytes: int


def training_seed(start: StartRound, edge: str) -> int:
    """Each edge and round its own shuffling, reproducible from the job's seed."""
    digest = hashlib.sha256(f"{start.seed}:{start.job}:{edge}:{start.round}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def compute_update(
    start: StartRound,
    global_bytes: bytes,
    samples: list[Sample],
    *,
    edge: str,
    device: torch.device,
    stop: threading.Event,
    workers: int = 2,
) -> LocalUpdate:
    """Fine-tune the global model of ``start`` on ``samples``; the fp16 delta as safetensors bytes.

    Raises :class:`WireError` when the global model is not the one announced, ValueError when no
    image can be trained or training diverged, TrainingStoppedError when ``stop`` is set.
    """
    loaded = load_artifact_bytes(global_bytes, start.model.uri)
    if (loaded.manifest.arch, loaded.manifest.nc) != (start.arch, start.nc):
        raise WireError(
            Reason.MODEL_MISMATCH,
            f"global model is {loaded.manifest.arch}/{loaded.manifest.nc} classes, start-round says "
            f"{start.arch}/{start.nc}",
        )
    model = loaded.build()
    macs = conv_macs_per_image(model, start.img_size)
    config = FullTrainConfig(
        epochs=start.epochs,
        batch_size=start.batch_size,
        img_size=start.img_size,
        optimizer=OptimizerConfig(start.optimizer, start.learning_rate, start.momentum, start.weight_decay),
        seed=training_seed(start, edge),
        workers=workers,
    )
    result = train_full(model, samples, config, device=device, stop=stop)
    delta = delta_state(model.state_dict(), loaded.state)
    if not all(bool(torch.isfinite(t).all()) for t in delta.values() if t.is_floating_point()):
        raise ValueError(f"round {start.round}: the update is not finite in float16 (training diverged)")
    metadata = {
        _METADATA_KEY: json.dumps(
            {
                "job": start.job,
                "edge": edge,
                "round": start.round,
                "base_sha256": start.model.sha256,
                "encoding": "delta",
                "samples": result.samples,
            },
            sort_keys=True,
        )
    }
    return LocalUpdate(
        payload=serialize_update(delta, metadata),
        samples=result.samples,
        losses=result.losses,
        steps=result.steps,
        skipped_steps=result.skipped_steps,
        train_s=result.seconds,
        flops=training_flops(macs, result.images),
        peak_rss_bytes=peak_rss_bytes(),
    )


def update_message(
    start: StartRound, local: LocalUpdate, *, edge: str, ref: BlobRef, download_bytes: int, download_s: float
) -> UpdateMessage:
    """The message announcing ``local`` (uploaded at ``ref``) for ``start``'s round."""
    return UpdateMessage.model_validate(
        {
            "schema": 1,
            "type": UPDATE_TYPE,
            "job": start.job,
            "edge": edge,
            "round": start.round,
            "created_at": time.time(),
            "base_sha256": start.model.sha256,
            "samples": local.samples,
            "epochs": start.epochs,
            "encoding": "delta",
            "dtype": "float16",
            "ref": ref,
            "measurements": EdgeMeasurements(
                train_s=local.train_s,
                flops=local.flops,
                peak_rss_bytes=local.peak_rss_bytes,
                steps=local.steps,
                skipped_steps=local.skipped_steps,
                losses=TrainLosses(box=local.losses[0], obj=local.losses[1], cls=local.losses[2]),
                download_bytes=download_bytes,
                download_s=download_s,
            ),
            "privacy": UpdatePrivacy(mechanism="fedavg", note=FEDAVG_PRIVACY_NOTE),
        }
    )

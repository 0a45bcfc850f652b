"""One round end to end: train, evaluate, checkpoint, commit, then publish the model and the event.

A round counts as completed once its checkpoint is on disk and its row (with the event and the
training log) is committed. Publishing (S3 artifact, latest pointer, MODEL_URL, ``round.completed``)
follows as an outbox: a round committed but not yet published is published on the next start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from consumers.cloud.checkpoint import OPTIMIZER_FILE, optimizer_to_bytes, read_checkpoint, write_checkpoint
from consumers.cloud.evaluation import evaluate_private, evaluate_public
from consumers.cloud.metrics import CloudMetrics
from consumers.cloud.model import JobModel
from consumers.cloud.outbox import SOURCE, RoundOutbox, event_message
from consumers.cloud.publish import model_ref
from consumers.cloud.store import CompletedRound, FeatureStore, StoredBatch
from consumers.cloud.trainer import RoundTraining, Trainer
from shared.amqp.publisher import ConfirmedPublisher
from shared.blob.store import BlobStore
from shared.config.cloud import CloudSettings
from shared.dataset.sources import Sample
from shared.wire.events import Losses, ModelRef, PrivacySummary, RoundCompleted, ValMetrics
from shared.yolo.artifact import MANIFEST_FILE, WEIGHTS_FILE, Manifest, serialize_artifact
from shared.yolo.network import split_state

log = logging.getLogger(__name__)
__all__ = ["SOURCE", "RoundRunner", "event_message"]

#: (private val, public val) metrics of one evaluation.
Metrics = tuple[ValMetrics | None, ValMetrics | None]


@dataclass(frozen=True)
class _RoundFacts:
    """What one round did, for its manifest and its event."""

    round: int
    started_at: float
    finished_at: float
    training: RoundTraining
    metrics: Metrics
    baseline: Metrics
    bytes_received: int
    bytes_received_total: int


class RoundRunner:
    """Runs rounds with a :class:`Trainer` over a :class:`FeatureStore`; blocking work goes to threads."""

    def __init__(
        self,
        settings: CloudSettings,
        *,
        model: JobModel,
        trainer: Trainer,
        store: FeatureStore,
        blobs: BlobStore,
        publisher: ConfirmedPublisher,
        metrics: CloudMetrics,
        public_val: list[Sample],
        stop: threading.Event,
    ):
        self.settings = settings
        self.model = model
        self.trainer = trainer
        self.store = store
        self.blobs = blobs
        self.publisher = publisher
        self.metrics = metrics
        self.public_val = public_val
        self.stop = stop
        self.outbox = RoundOutbox(settings, store=store, blobs=blobs, publisher=publisher)

    def resume(self) -> int:
        """Load the last completed round's model and optimizer; returns that round (0: none yet)."""
        rounds = self.store.completed_rounds()
        if not rounds:
            return 0
        checkpoint = read_checkpoint(self.store.checkpoints, rounds[-1].round)
        cloud_state = split_state(checkpoint.model.state, self.model.cut_layer, self.model.arch.num_layers)
        self.trainer.model.load_state_dict(cloud_state)
        self.trainer.optimizer.load_state_dict(checkpoint.optimizer)
        log.info("resumed from checkpoint", extra={"job": self.settings.job, "round": checkpoint.round})
        return checkpoint.round

    async def run_round(self, round_no: int) -> CompletedRound:
        """Train round ``round_no`` on everything stored so far, evaluate, checkpoint and commit it.

        Raises :class:`TrainingInterruptedError` when stopped; nothing of the round is kept then.
        """
        settings, store = self.settings, self.store
        watermark = store.last_batch_id()
        train, val = store.batches("train", watermark), store.batches("val", watermark)
        previous = store.completed_rounds()
        after = previous[-1].watermark if previous else 0
        # Round 0: the pretrained model on the same val sets, i.e. the bits-only pipeline without fine-tuning.
        baseline = await asyncio.to_thread(self._evaluate, val) if round_no == 1 else (None, None)
        started = time.time()
        log.info(
            "round started",
            extra={"job": settings.job, "round": round_no, "train_batches": len(train), "val_batches": len(val)},
        )
        training = await asyncio.to_thread(self.trainer.train_round, round_no, train, self.stop)
        metrics = await asyncio.to_thread(self._evaluate, val)
        facts = _RoundFacts(
            round=round_no,
            started_at=started,
            finished_at=time.time(),
            training=training,
            metrics=metrics,
            baseline=baseline,
            bytes_received=store.wire_bytes(after, watermark),
            bytes_received_total=store.wire_bytes(0, watermark),
        )
        full_state = self.model.full_state(self.trainer.model.state_dict())
        weights, manifest_json = serialize_artifact(full_state, self._manifest(facts))
        event = self._event(facts, model_ref(self.blobs, settings.job, round_no, weights))
        files = {
            WEIGHTS_FILE: weights,
            MANIFEST_FILE: manifest_json,
            OPTIMIZER_FILE: optimizer_to_bytes(self.trainer.optimizer.state_dict()),
        }
        await asyncio.to_thread(write_checkpoint, store.checkpoints, round_no, files)
        record = event.model_dump(by_alias=True, mode="json")
        await asyncio.to_thread(store.commit_round, round_no, watermark, record, training.log)
        self._observe(event, training)
        return CompletedRound(round_no, watermark, record, published=False)

    def _evaluate(self, val: list[StoredBatch]) -> Metrics:
        s = self.settings
        private = evaluate_private(self.trainer.model, val, s.img_size, s.batch_size, self.stop)
        public = None
        if self.public_val:
            full = self.model.full_model(self.trainer.model.state_dict())
            public = evaluate_public(
                full,
                cut_layer=s.cut_layer,
                samples=self.public_val,
                img_size=s.img_size,
                batch_size=s.batch_size,
                stop=self.stop,
            )
        return private, public

    def _manifest(self, facts: _RoundFacts) -> Manifest:
        """What the artifact says about itself: enough for `mistnet eval` to run the deployed pipeline."""
        private, public = facts.metrics
        return Manifest(
            arch=self.model.arch.name,
            nc=self.model.arch.nc,
            names=self.model.names,
            img_size=self.model.img_size,
            cut_layer=self.model.cut_layer,
            encoding="bits",
            privacy=self._privacy().model_dump(),
            metrics={"val": _dump(private), "public_val": _dump(public), "losses": _losses(facts.training)},
            job=self.settings.job,
            round=facts.round,
            algorithm=self.settings.aggregation_algorithm,
        )

    def _event(self, facts: _RoundFacts, model: ModelRef) -> RoundCompleted:
        s, training = self.settings, facts.training
        return RoundCompleted(
            id=f"{s.job}.round.completed.{facts.round}",
            job=s.job,
            source=SOURCE,
            round=facts.round,
            rounds=s.rounds,
            algorithm=s.aggregation_algorithm,
            started_at=facts.started_at,
            finished_at=facts.finished_at,
            duration_s=facts.finished_at - facts.started_at,
            epochs=s.epochs,
            samples_total=sum(training.samples_per_edge.values()),
            samples_per_edge=training.samples_per_edge,
            losses=Losses(**_losses(training)),
            val=facts.metrics[0],
            public_val=facts.metrics[1],
            baseline_val=facts.baseline[0],
            baseline_public_val=facts.baseline[1],
            privacy=self._privacy(),
            bytes_received=facts.bytes_received,
            bytes_received_total=facts.bytes_received_total,
            model=model,
        )

    def _privacy(self) -> PrivacySummary:
        params = self.settings.privacy_params
        c, h, w = self.model.feature_chw
        return PrivacySummary(
            mechanism=params.mechanism.value,
            epsilon=params.epsilon,
            epsilon_bit=params.epsilon_bit,
            epsilon_image=params.epsilon_image(c * h * w),
        )

    def _observe(self, event: RoundCompleted, training: RoundTraining) -> None:
        m = self.metrics
        m.round_duration.observe(event.duration_s)
        m.last_round.set(event.round)
        m.last_round_time.set(event.finished_at)
        for part, value in zip(("box", "obj", "cls"), training.losses, strict=True):
            m.loss.labels(part).set(value)
        for split, metrics in (("private", event.val), ("public", event.public_val)):
            if metrics is not None:
                m.map50.labels(split).set(metrics.map50)
        log.info(
            "round completed",
            extra={
                "job": event.job,
                "round": event.round,
                "duration_s": round(event.duration_s, 2),
                "samples": event.samples_total,
                "loss": round(sum(training.losses), 5),
                "map50": None if event.val is None else round(event.val.map50, 4),
                "public_map50": None if event.public_val is None else round(event.public_val.map50, 4),
                "skipped_steps": training.skipped_steps,
            },
        )

    async def publish(self, completed: CompletedRound) -> None:
        """Upload the round's artifact, move ``latest``, copy to MODEL_URL, emit the event; retried until done."""
        await self.outbox.publish(completed)

    async def publish_pending(self) -> None:
        await self.outbox.publish_pending()

    async def finish_job(self) -> None:
        """Emit ``job.completed`` once (a restart after it does not repeat it)."""
        await self.outbox.finish_job()


def _losses(training: RoundTraining) -> dict[str, float]:
    return dict(zip(("box", "obj", "cls"), training.losses, strict=True))


def _dump(metrics: ValMetrics | None) -> dict[str, float | int] | None:
    return None if metrics is None else metrics.model_dump()

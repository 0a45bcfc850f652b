"""One FedAvg round on the cloud: publish the global model and ``start-round``, then average, evaluate, commit.

Opening a round is idempotent: its global model is saved locally and recorded before ``start-round``
goes out, so a restart re-publishes the same bytes, sha256 and message. A round completes as MistNet's
do: checkpoint on disk, then the round's row (with its event) committed in the feature store; the
shared :class:`~consumers.cloud.outbox.RoundOutbox` publishes it afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import torch

from consumers.cloud.checkpoint import round_dir, write_checkpoint
from consumers.cloud.evaluation import evaluate_public
from consumers.cloud.fedavg.policy import Aggregate
from consumers.cloud.fedavg.report import AggregatedRound, ModelInfo, manifest, round_event
from consumers.cloud.fedavg.store import RoundStart, UpdateStore
from consumers.cloud.publish import SAFETENSORS, model_ref
from consumers.cloud.store import CompletedRound, FeatureStore
from shared.amqp.publisher import ConfirmedPublisher, OutgoingMessage
from shared.blob.store import BlobStore
from shared.config.cloud import CloudSettings
from shared.dataset.sources import Sample
from shared.training.fedavg import federated_average, load_update, update_layout
from shared.wire import names
from shared.wire.control import START_ROUND_TYPE, STOP_TYPE, StartRound, StopJob
from shared.wire.events import JSON_CONTENT_TYPE, ValMetrics
from shared.wire.features import BlobRef, sha256_hex
from shared.yolo.artifact import MANIFEST_FILE, WEIGHTS_FILE, LoadedModel, load_artifact_bytes, serialize_artifact
from shared.yolo.network import YoloSegment
from shared.yolo.table import build_arch

log = logging.getLogger(__name__)
_STOP_SENT_KEY = "fedavg_stop_sent"


class GlobalModelError(RuntimeError):
    """A round's saved global model does not match what was recorded when the round started."""


@dataclass(frozen=True)
class CloudParts:
    """What the rounds use, built by the composition root."""

    store: FeatureStore
    updates: UpdateStore
    blobs: BlobStore
    publisher: ConfirmedPublisher


class FedAvgRounds:
    """Opens and completes rounds over the pretrained model ``pretrained``; blocking work goes to threads."""

    def __init__(
        self,
        settings: CloudSettings,
        parts: CloudParts,
        *,
        pretrained: LoadedModel,
        public_val: list[Sample],
        stop: threading.Event,
    ):
        self.settings = settings
        self.parts = parts
        self.pretrained = pretrained
        self.public_val = public_val
        self.stop = stop
        m = pretrained.manifest
        self.info = ModelInfo(m.arch, m.nc, list(m.names), settings.img_size)
        self.arch = build_arch(m.arch, m.nc)
        self.layout = update_layout(pretrained.state)

    def last_completed(self) -> int:
        rounds = self.parts.store.completed_rounds()
        return rounds[-1].round if rounds else 0

    # --- opening -----------------------------------------------------------------------------------

    def _global_bytes(self, round_no: int, start: RoundStart | None) -> bytes:
        """Round 1: the pretrained model; round r: round r-1's artifact; a started round: its saved copy."""
        if start is not None:
            data = self.parts.updates.global_path(round_no).read_bytes()
            if sha256_hex(data) != start.global_sha256:
                raise GlobalModelError(f"the saved global model of round {round_no} does not match its sha256")
            return data
        if round_no == 1:
            weights, _ = serialize_artifact(self.pretrained.state, manifest(self.info, self.settings.job, 0, {}))
            return weights
        return (round_dir(self.parts.store.checkpoints, round_no - 1) / WEIGHTS_FILE).read_bytes()

    def _start_message(self, start: RoundStart) -> StartRound:
        s = self.settings
        return StartRound(
            job=s.job,
            created_at=start.started_at,
            round=start.round,
            rounds=s.rounds,
            model=BlobRef(uri=start.global_uri, size=start.global_size, sha256=start.global_sha256),
            arch=self.info.arch,
            nc=self.info.nc,
            img_size=s.img_size,
            epochs=s.epochs,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            optimizer=s.optimizer,
            momentum=s.momentum,
            weight_decay=s.weight_decay,
            seed=s.seed,
            deadline_at=start.deadline_at,
        )

    async def open(self, round_no: int) -> RoundStart:
        """Upload round ``round_no``'s global model and publish its ``start-round`` (again, after a restart)."""
        s, updates = self.settings, self.parts.updates
        recorded = updates.round_start(round_no)
        data = await asyncio.to_thread(self._global_bytes, round_no, recorded)
        if recorded is None:
            await asyncio.to_thread(updates.save_global, round_no, data)
        uri = await self.parts.blobs.put(names.global_model_key(s.job, round_no), data, SAFETENSORS)
        start = recorded
        if start is None:
            now = time.time()
            deadline = None if s.round_deadline_s is None else now + s.round_deadline_s
            draft = RoundStart(round_no, sha256_hex(data), uri, len(data), 0, now, deadline)
            body = self._start_message(draft).to_json()
            start = updates.start_round(
                RoundStart(round_no, draft.global_sha256, uri, len(data), len(body), now, deadline)
            )
        if start.closed_at is None:
            message = self._start_message(start)
            await self.parts.publisher.publish(_control(s.job, message.to_json(), message.message_id, START_ROUND_TYPE))
            log.info(
                "round started",
                extra={
                    "job": s.job,
                    "round": round_no,
                    "global_sha256": start.global_sha256,
                    "bytes": start.global_size,
                },
            )
        return start

    # --- completing --------------------------------------------------------------------------------

    async def complete(self, start: RoundStart, decision: Aggregate) -> CompletedRound:
        """Close the round, average its updates, evaluate, checkpoint and commit it."""
        round_no, updates = start.round, self.parts.updates
        await asyncio.to_thread(updates.close_round, round_no)
        log.info("aggregating", extra={"job": self.settings.job, "round": round_no, "reason": decision.reason})
        record = await asyncio.to_thread(self._aggregate, start)
        await asyncio.to_thread(self.parts.store.commit_round, round_no, 0, record, {})
        return CompletedRound(round_no, 0, record, published=False)

    def _aggregate(self, start: RoundStart) -> dict[str, object]:
        s, parts = self.settings, self.parts
        expected = s.expected_edges.names or frozenset()
        stored = [u for u in parts.updates.updates(start.round) if u.edge in expected]
        if not stored:
            raise RuntimeError(f"round {start.round} closed without any update")
        deltas = {}
        for update in stored:
            blob = update.path.read_bytes()
            if sha256_hex(blob) != update.sha256:
                raise RuntimeError(f"stored update {update.path} does not match its sha256")
            deltas[update.edge] = load_update(blob, self.layout)
        global_state = load_artifact_bytes(self._global_bytes(start.round, start), start.global_uri).state
        samples = {u.edge: u.samples for u in stored}
        state = federated_average(global_state, deltas, samples)
        weights = {edge: n / sum(samples.values()) for edge, n in samples.items()}
        public = self._evaluate(state)
        baseline = self._evaluate(self.pretrained.state) if start.round == 1 else None
        previous = parts.store.completed_rounds()
        facts = AggregatedRound(
            start=start,
            finished_at=time.time(),
            updates=stored,
            weights=weights,
            public=public,
            baseline=baseline,
            stragglers=parts.updates.stragglers_during(start.round),
            bytes_received_before=int(previous[-1].event.get("bytes_received_total", 0)) if previous else 0,
        )
        metrics = {"val": _dump(public), "public_val": _dump(public), "weights": weights}
        weights_blob, manifest_json = serialize_artifact(state, manifest(self.info, s.job, start.round, metrics))
        event = round_event(s, facts, model_ref(parts.blobs, s.job, start.round, weights_blob))
        write_checkpoint(
            parts.store.checkpoints, start.round, {WEIGHTS_FILE: weights_blob, MANIFEST_FILE: manifest_json}
        )
        log.info(
            "round aggregated",
            extra={
                "job": s.job,
                "round": start.round,
                "edges": sorted(samples),
                "samples": sum(samples.values()),
                "map50": None if public is None else round(public.map50, 4),
            },
        )
        return event.model_dump(by_alias=True, mode="json")

    def _evaluate(self, state: dict[str, torch.Tensor]) -> ValMetrics | None:
        if not self.public_val:
            return None
        model = YoloSegment(self.arch)
        model.load_state_dict(state)
        s = self.settings
        return evaluate_public(
            model.eval(),
            cut_layer=None,
            samples=self.public_val,
            img_size=s.img_size,
            batch_size=s.batch_size,
            stop=self.stop,
        )

    async def send_stop(self) -> None:
        """Tell the edges the job is over (once; a restart after it does not repeat it)."""
        store = self.parts.store
        if store.meta(_STOP_SENT_KEY) is not None:
            return
        message = StopJob(
            job=self.settings.job, created_at=time.time(), rounds=self.settings.rounds, reason="job completed"
        )
        await self.parts.publisher.publish(
            _control(self.settings.job, message.to_json(), message.message_id, STOP_TYPE)
        )
        await asyncio.to_thread(store.set_meta, _STOP_SENT_KEY, message.message_id)
        log.info("stop sent to the edges", extra={"job": self.settings.job})


def _control(job: str, body: bytes, message_id: str, kind: str) -> OutgoingMessage:
    return OutgoingMessage(
        exchange=names.CONTROL_EXCHANGE,
        routing_key=names.control_routing_key(job, "all"),
        body=body,
        message_id=message_id,
        content_type=JSON_CONTENT_TYPE,
        type=kind,
    )


def _dump(metrics: ValMetrics | None) -> dict[str, float | int] | None:
    return None if metrics is None else metrics.model_dump()

"""Publishing committed rounds, whatever the algorithm: artifact, latest pointer, MODEL_URL, then the event.

A round counts as completed once its checkpoint is on disk and its row is committed in the store;
publishing follows as an outbox, retried until done, and a round committed but not yet published is
published on the next start. ``job.completed`` is sent once.
"""

from __future__ import annotations

import asyncio
import json
import logging

from consumers.cloud.checkpoint import round_dir
from consumers.cloud.publish import copy_to_model_url, parse_model_url, publish_artifact
from consumers.cloud.store import CompletedRound, FeatureStore
from shared.amqp.publisher import ConfirmedPublisher, NotConfirmedError, OutgoingMessage
from shared.blob.store import BlobError, BlobStore
from shared.config.cloud import CloudSettings
from shared.wire import names
from shared.wire.events import JSON_CONTENT_TYPE, JobCompleted, ModelRef, ValMetrics
from shared.yolo.artifact import MANIFEST_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)
SOURCE = "mistnet-cloud"
JOB_COMPLETED_KEY = "job_completed_event"
_MAX_RETRY_S = 60.0


def event_message(job: str, event: dict[str, object]) -> OutgoingMessage:
    """A JSON event (as stored) for ``mistnet.events``, routed ``<job>.<type>``."""
    kind = str(event["type"])
    return OutgoingMessage(
        exchange=names.EVENTS_EXCHANGE,
        routing_key=names.event_routing_key(job, kind),
        body=json.dumps(event, allow_nan=False).encode(),
        message_id=str(event["id"]),
        content_type=JSON_CONTENT_TYPE,
        type=kind,
    )


class RoundOutbox:
    """Publishes what the store holds as committed; never publishes a round that is not committed."""

    def __init__(
        self, settings: CloudSettings, *, store: FeatureStore, blobs: BlobStore, publisher: ConfirmedPublisher
    ):
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.publisher = publisher
        self.model_url = parse_model_url(settings.model_url, settings.bucket) if settings.model_url else None

    async def publish(self, completed: CompletedRound) -> None:
        """Upload the round's artifact, move ``latest``, copy to MODEL_URL, emit the event; retried until done."""
        folder = round_dir(self.store.checkpoints, completed.round)
        weights = (folder / WEIGHTS_FILE).read_bytes()
        manifest = (folder / MANIFEST_FILE).read_bytes()
        delay = 1.0
        while True:
            try:
                await publish_artifact(self.blobs, self.settings.job, completed.round, weights, manifest)
                if self.model_url is not None:
                    await copy_to_model_url(self.model_url, self.blobs, weights, manifest)
                await self.publisher.publish(event_message(self.settings.job, completed.event))
                break
            except (BlobError, NotConfirmedError, OSError) as exc:
                log.warning(
                    "publishing the round failed, retrying",
                    extra={"round": completed.round, "retry_in_s": delay, "error": f"{type(exc).__name__}: {exc}"},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_S)
        await asyncio.to_thread(self.store.mark_published, completed.round)
        log.info("round published", extra={"round": completed.round, "model": completed.event["model"]["uri"]})

    async def publish_pending(self) -> None:
        for completed in self.store.completed_rounds():
            if not completed.published:
                await self.publish(completed)

    async def finish_job(self) -> bool:
        """Emit ``job.completed`` once (a restart after it does not repeat it); True when sent now."""
        if self.store.meta(JOB_COMPLETED_KEY) is not None:
            return False
        last = self.store.completed_rounds()[-1].event
        event = JobCompleted(
            id=f"{self.settings.job}.job.completed",
            job=self.settings.job,
            source=SOURCE,
            rounds=self.settings.rounds,
            algorithm=self.settings.aggregation_algorithm,
            final_val=ValMetrics.model_validate(last["val"]) if last.get("val") else None,
            model=ModelRef.model_validate(last["model"]),
        )
        await self.publisher.publish(event_message(self.settings.job, event.model_dump(by_alias=True, mode="json")))
        await asyncio.to_thread(self.store.set_meta, JOB_COMPLETED_KEY, event.id)
        log.info("job completed", extra={"job": self.settings.job, "rounds": self.settings.rounds})
        return True

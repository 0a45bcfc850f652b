"""Ingesting one FedAvg update: validate before downloading, fetch the tensors, check them, store, or refuse.

Checks run cheapest and least trusting first: content type and message type; the body against the
schema and its bounds; the job; ``user_id`` may speak for the update's edge; the routing key and the
message id are the edge's own; the edge is expected; the reference lies in our bucket under the edge's
update prefix and is no larger than the model's update can be. Then the round: an update for a closed
round is a straggler (acknowledged, counted, discarded); one for a round never started is refused; one
trained from another global model is refused. Only then the download: size, sha256, the safetensors
header (names, dtypes and shapes exactly the model's), finite values.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from consumers.cloud.fedavg.policy import Verdict, classify_round
from consumers.cloud.fedavg.store import NewUpdate, UpdateStore
from consumers.cloud.ingest import Delivery, Duplicate, Rejected
from shared.blob.store import BlobMissingError, BlobStore, BlobTooLargeError, check_key
from shared.config.cloud import EdgeUsers
from shared.training.fedavg import load_update
from shared.wire import names
from shared.wire.features import CONTENT_TYPE, Reason, WireError, sha256_hex
from shared.wire.update import UPDATE_TYPE, TensorSpec, UpdateMessage, decode_update, max_update_bytes


@dataclass(frozen=True)
class UpdateExpectations:
    """What every update of this job must match; ``layout`` is the model's update layout."""

    job: str
    bucket: str
    speakers: EdgeUsers
    expected: frozenset[str]
    layout: dict[str, TensorSpec]
    max_object_bytes: int


@dataclass(frozen=True)
class StoredUpdateOutcome:
    edge: str
    round: int
    wire_bytes: int
    fetch_s: float


@dataclass(frozen=True)
class Straggler:
    """A late update: its round closed before it arrived (acknowledged and discarded)."""

    edge: str
    round: int
    first_time: bool


UpdateOutcome = StoredUpdateOutcome | Duplicate | Straggler | Rejected


def check_update_envelope(delivery: Delivery, expect: UpdateExpectations) -> UpdateMessage:
    """Every check that needs neither the round state nor a download; raises :class:`WireError`."""
    if delivery.content_type != CONTENT_TYPE:
        raise WireError(Reason.UNDECODABLE, f"content type {delivery.content_type!r} is not {CONTENT_TYPE}")
    if delivery.type != UPDATE_TYPE:
        raise WireError(Reason.INVALID_FIELD, f"message type {delivery.type!r} is not {UPDATE_TYPE}")
    update = decode_update(delivery.body)
    if update.job != expect.job:
        raise WireError(Reason.INVALID_FIELD, f"update of job {update.job!r} arrived in job {expect.job!r}'s queue")
    if not expect.speakers.allows(delivery.user_id, update.edge):
        raise WireError(
            Reason.USER_ID_MISMATCH, f"broker user {delivery.user_id!r} may not send for edge {update.edge!r}"
        )
    if delivery.routing_key != names.features_routing_key(expect.job, update.edge):
        raise WireError(Reason.INVALID_FIELD, f"routing key {delivery.routing_key!r} is not the edge's own")
    own_id = names.update_message_id(update.job, update.edge, update.round)
    if delivery.message_id != own_id:
        raise WireError(Reason.INVALID_FIELD, f"message id {delivery.message_id!r} is not the update's id {own_id!r}")
    if update.edge not in expect.expected:
        raise WireError(Reason.INVALID_FIELD, f"edge {update.edge!r} is not one of the job's expected edges")
    _check_ref(update, expect)
    return update


def _check_ref(update: UpdateMessage, expect: UpdateExpectations) -> None:
    ref = update.ref
    prefix = names.update_prefix(expect.job, update.edge)
    if ref.bucket != expect.bucket:
        raise WireError(Reason.REF_OUTSIDE_PREFIX, f"ref bucket {ref.bucket!r} is not the job's {expect.bucket!r}")
    try:
        check_key(ref.key)
    except ValueError as exc:
        raise WireError(Reason.REF_OUTSIDE_PREFIX, str(exc)) from None
    if not ref.key.startswith(prefix):
        raise WireError(Reason.REF_OUTSIDE_PREFIX, f"ref key {ref.key!r} is outside the edge's prefix {prefix!r}")
    limit = min(max_update_bytes(expect.layout), expect.max_object_bytes)
    if ref.size > limit:
        raise WireError(Reason.OVERSIZE, f"update of {ref.size} bytes exceeds the {limit} this model's update may take")


async def fetch_update(update: UpdateMessage, blobs: BlobStore, layout: dict[str, TensorSpec]) -> bytes:
    """The update file, downloaded (size checked first) and verified: size, sha256, header, finite values."""
    ref = update.ref
    try:
        blob = await blobs.get(ref.key, max_bytes=ref.size)
    except BlobTooLargeError as exc:
        raise WireError(Reason.OVERSIZE, str(exc)) from None
    except BlobMissingError:
        raise WireError(Reason.MISSING_OBJECT, f"referenced object {ref.uri} does not exist") from None
    if len(blob) != ref.size:
        raise WireError(Reason.SIZE_MISMATCH, f"object is {len(blob)} bytes, the reference says {ref.size}")
    if sha256_hex(blob) != ref.sha256:
        raise WireError(Reason.SHA256_MISMATCH, "update sha256 does not match the reference")
    await asyncio.to_thread(load_update, blob, layout)
    return blob


async def ingest_update(
    delivery: Delivery, expect: UpdateExpectations, blobs: BlobStore, store: UpdateStore
) -> UpdateOutcome:
    """Validate, fetch and store one update. Transient failures (S3, disk) raise; the caller requeues."""
    try:
        update = check_update_envelope(delivery, expect)
        message_id = names.update_message_id(update.job, update.edge, update.round)
        if store.has_message(message_id):
            return Duplicate(update.edge)
        current = store.open_round()
        last_closed = store.last_closed()
        verdict = classify_round(update.round, current.round if current else None, last_closed)
        if verdict is Verdict.STRAGGLER:
            during = current.round if current else last_closed
            first = await asyncio.to_thread(store.record_straggler, message_id, update.edge, update.round, during)
            return Straggler(update.edge, update.round, first)
        if verdict is Verdict.NOT_STARTED or current is None:
            open_round = current.round if current else None
            raise WireError(Reason.WRONG_ROUND, f"round {update.round} has not started (open round: {open_round})")
        if update.base_sha256 != current.global_sha256:
            raise WireError(
                Reason.MODEL_MISMATCH,
                f"update was trained from {update.base_sha256[:12]}…, not round {update.round}'s "
                f"global model {current.global_sha256[:12]}…",
            )
        started = time.perf_counter()
        blob = await fetch_update(update, blobs, expect.layout)
        fetch_s = time.perf_counter() - started
    except WireError as exc:
        return Rejected(exc.reason, exc.detail)
    record = NewUpdate(
        round=update.round,
        edge=update.edge,
        message_id=message_id,
        samples=update.samples,
        sha256=update.ref.sha256,
        payload=blob,
        wire_bytes=len(delivery.body) + len(blob),
        measurements=update.measurements.model_dump(),
    )
    result = await asyncio.to_thread(store.put_update, record)
    if result == "duplicate":
        return Duplicate(update.edge)
    if result == "closed":
        first = await asyncio.to_thread(store.record_straggler, message_id, update.edge, update.round, update.round)
        return Straggler(update.edge, update.round, first)
    return StoredUpdateOutcome(update.edge, update.round, record.wire_bytes, fetch_s)

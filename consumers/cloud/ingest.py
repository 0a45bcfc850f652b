"""Ingesting one feature message: validate before allocating, fetch a claim check, store durably, or refuse.

Checks run in this order, cheapest and least trusting first: content type and message type; the
body against the wire limits and schema; the job; ``user_id`` may speak for the batch's edge; the
message id is the batch's own; model spec, feature shape and privacy match the job's; a reference
lies in our bucket under the sender's prefix; the object's size before downloading it; its sha256;
the targets. A refusal is a :class:`Rejected` with the reason the dead-letter copy carries.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from consumers.cloud.store import FeatureStore, NewBatch
from shared.amqp.publisher import OutgoingMessage
from shared.blob.store import BlobMissingError, BlobStore, BlobTooLargeError, check_key
from shared.config.cloud import EdgeUsers
from shared.privacy import PrivacyParams
from shared.wire import names
from shared.wire.features import (
    CONTENT_TYPE,
    MESSAGE_TYPE,
    FeatureBatch,
    ModelSpec,
    Reason,
    WireError,
    WireLimits,
    check_payload,
    decode_batch,
    decode_targets,
)

REASON_HEADER = "x-mistnet-reason"
DETAIL_HEADER = "x-mistnet-detail"


@dataclass(frozen=True)
class Delivery:
    """What ingest reads of an AMQP delivery."""

    body: bytes
    message_id: str | None
    user_id: str | None
    type: str | None
    content_type: str | None
    routing_key: str | None
    timestamp: float | None = None


@dataclass(frozen=True)
class Expectations:
    """What every batch of this job must match."""

    job: str
    model: ModelSpec
    feature_chw: tuple[int, int, int]
    privacy: PrivacyParams
    num_classes: int
    bucket: str
    limits: WireLimits
    speakers: EdgeUsers


@dataclass(frozen=True)
class Stored:
    edge: str
    split: str
    images: int
    wire_bytes: int
    fetch_s: float


@dataclass(frozen=True)
class Duplicate:
    edge: str


@dataclass(frozen=True)
class Rejected:
    reason: Reason
    detail: str


Outcome = Stored | Duplicate | Rejected


def check_envelope(delivery: Delivery, expect: Expectations) -> FeatureBatch:
    """Every check that needs no download; raises :class:`WireError` naming the rule broken."""
    if delivery.content_type != CONTENT_TYPE:
        raise WireError(Reason.UNDECODABLE, f"content type {delivery.content_type!r} is not {CONTENT_TYPE}")
    if delivery.type != MESSAGE_TYPE:
        raise WireError(Reason.INVALID_FIELD, f"message type {delivery.type!r} is not {MESSAGE_TYPE}")
    batch = decode_batch(delivery.body, expect.limits)
    if batch.job != expect.job:
        raise WireError(Reason.INVALID_FIELD, f"batch of job {batch.job!r} arrived in job {expect.job!r}'s queue")
    if not expect.speakers.allows(delivery.user_id, batch.edge):
        raise WireError(
            Reason.USER_ID_MISMATCH, f"broker user {delivery.user_id!r} may not send for edge {batch.edge!r}"
        )
    own_id = names.feature_message_id(batch.job, batch.edge, batch.seq)
    if delivery.message_id != own_id:
        raise WireError(Reason.INVALID_FIELD, f"message id {delivery.message_id!r} is not the batch's id {own_id!r}")
    if batch.model != expect.model:
        raise WireError(
            Reason.MODEL_MISMATCH,
            f"features of {batch.model.model_dump()} do not fit the job's {expect.model.model_dump()}",
        )
    if tuple(batch.shape[1:]) != expect.feature_chw:
        raise WireError(Reason.SHAPE_MISMATCH, f"feature shape {batch.shape[1:]} is not {list(expect.feature_chw)}")
    _check_privacy(batch, expect.privacy)
    if batch.ref is not None:
        _check_ref(batch, expect)
    return batch


def _check_privacy(batch: FeatureBatch, job: PrivacyParams) -> None:
    got = batch.privacy
    same_epsilon = (got.epsilon is None) == (job.epsilon is None) and (
        got.epsilon is None or job.epsilon is None or math.isclose(got.epsilon, job.epsilon)
    )
    if got.mechanism != job.mechanism.value or not same_epsilon or not math.isclose(got.q, job.q, abs_tol=1e-12):
        raise WireError(
            Reason.INVALID_FIELD,
            f"privacy {got.mechanism} ε={got.epsilon} differs from the job's {job.mechanism.value} ε={job.epsilon}",
        )


def _check_ref(batch: FeatureBatch, expect: Expectations) -> None:
    assert batch.ref is not None
    prefix = names.edge_prefix(expect.job, batch.edge)
    if batch.ref.bucket != expect.bucket:
        raise WireError(
            Reason.REF_OUTSIDE_PREFIX, f"ref bucket {batch.ref.bucket!r} is not the job's {expect.bucket!r}"
        )
    try:
        check_key(batch.ref.key)
    except ValueError as exc:
        raise WireError(Reason.REF_OUTSIDE_PREFIX, str(exc)) from None
    if not batch.ref.key.startswith(prefix):
        raise WireError(Reason.REF_OUTSIDE_PREFIX, f"ref key {batch.ref.key!r} is outside the edge's prefix {prefix!r}")


async def fetch_payload(batch: FeatureBatch, blobs: BlobStore) -> bytes:
    """The packed bits, inline or downloaded (size checked first); size and sha256 verified."""
    if batch.ref is None:
        assert batch.payload is not None
        payload = batch.payload
    else:
        try:
            payload = await blobs.get(batch.ref.key, max_bytes=batch.ref.size)
        except BlobTooLargeError as exc:
            raise WireError(Reason.OVERSIZE, str(exc)) from None
        except BlobMissingError:
            raise WireError(Reason.MISSING_OBJECT, f"referenced object {batch.ref.uri} does not exist") from None
    check_payload(batch, payload)
    return payload


async def ingest(delivery: Delivery, expect: Expectations, blobs: BlobStore, store: FeatureStore) -> Outcome:
    """Validate, fetch and store one delivery. Transient failures (S3, disk) raise; the caller requeues."""
    try:
        batch = check_envelope(delivery, expect)
        if store.has_message(names.feature_message_id(batch.job, batch.edge, batch.seq)):
            return Duplicate(batch.edge)
        started = time.perf_counter()
        payload = await fetch_payload(batch, blobs)
        fetch_s = time.perf_counter() - started if batch.ref is not None else 0.0
        targets = decode_targets(batch, expect.num_classes)
    except WireError as exc:
        return Rejected(exc.reason, exc.detail)
    record = NewBatch(
        message_id=names.feature_message_id(batch.job, batch.edge, batch.seq),
        edge=batch.edge,
        seq=batch.seq,
        split=batch.split,
        shape=batch.dims,
        payload=payload,
        targets=targets,
        wire_bytes=len(delivery.body) + (batch.ref.size if batch.ref is not None else 0),
        created_at=batch.created_at,
    )
    if not await asyncio.to_thread(store.put, record):
        return Duplicate(batch.edge)
    return Stored(batch.edge, batch.split, batch.num_images, record.wire_bytes, fetch_s)


def dead_letter(delivery: Delivery, job: str, rejected: Rejected) -> OutgoingMessage:
    """A copy of a refused message for ``mistnet.<job>.dead``, with the reason headers."""
    sender = (delivery.routing_key or "").removeprefix(f"{job}.")
    sender = sender if names.NAME_PATTERN.fullmatch(sender) else "unknown"
    return OutgoingMessage(
        exchange=names.DEAD_LETTER_EXCHANGE,
        routing_key=f"{job}.{sender}",
        body=delivery.body,
        message_id=delivery.message_id or f"dead:{job}:{time.time_ns()}",
        content_type=delivery.content_type or "application/octet-stream",
        type=delivery.type or "unknown",
        headers={
            REASON_HEADER: rejected.reason.value,
            DETAIL_HEADER: rejected.detail,
            "x-mistnet-original-message-id": delivery.message_id or "",
            "x-mistnet-original-user-id": delivery.user_id or "",
        },
    )

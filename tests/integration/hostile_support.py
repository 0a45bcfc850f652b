"""Hostile feature messages and two publishers that are not ours (pika, the management HTTP API).

Every message is batch ``seq`` 100+i of edge-a, so the dead-letter copy's original message id names its case.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import pika
from pika.exceptions import ChannelClosedByBroker

from shared.wire import names
from shared.wire.features import CONTENT_TYPE, MESSAGE_TYPE, BlobRef, FeatureBatch, Reason, sha256_hex, wire_dict
from tests.integration.cloud_support import Env, as_ref, batch_fields, build
from tests.integration.conftest import MGMT_URL, Broker

#: The cloud under test refuses bodies above this (so the oversize case stays small).
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Hostile:
    """One message as a hostile publisher sends it; ``reason`` None: the broker itself must refuse it."""

    name: str
    body: bytes
    reason: Reason | None
    user_id: str | None = "edge-a"
    content_type: str = CONTENT_TYPE
    type: str = MESSAGE_TYPE


def packed(raw: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(raw, use_bin_type=True)
    return body


def bent(fields: dict[str, Any], **changes: Any) -> bytes:
    """The wire map of ``fields`` with raw values replaced (or removed when the value is ...)."""
    raw = wire_dict(FeatureBatch.model_validate(fields))
    for key, value in changes.items():
        if value is ...:
            raw.pop(key, None)
        else:
            raw[key] = value
    return packed(raw)


#: A wrong type for every field of the wire map (schema's is refused as an unsupported version).
WRONG_TYPES: dict[str, Any] = {
    "schema": "1",
    "type": 7,
    "job": ["testjob"],
    "edge": 5,
    "seq": "7",
    "split": 1,
    "created_at": "now",
    "model": "yolov5n",
    "privacy": [],
    "shape": "2x64x8x8",
    "encoding": b"packbits",
    "payload": "bits",
    "image_ids": "0123456789abcdef",
    "targets": {"dtype": 1},
}


async def hostile_cases(env: Env) -> list[Hostile]:
    """Every case, each as batch ``seq`` 100+i of edge-a (so its message id names it)."""
    job, s3 = env.job, env.s3

    def fields(seq: int, count: int = 2, edge: str = "edge-a", start: int = 0) -> dict[str, Any]:
        return env.batch(edge, seq, "train", start, count)

    cases: list[tuple[str, Reason | None, Callable[[int], Any]]] = [
        ("undecodable", Reason.UNDECODABLE, lambda s: b"\xc1 not msgpack"),
        ("map32-of-4g-entries", Reason.UNDECODABLE, lambda s: b"\xdf\xff\xff\xff\xff"),
        ("array32-of-4g-items", Reason.UNDECODABLE, lambda s: b"\xdd\xff\xff\xff\xff"),
        ("bin32-of-4g-bytes", Reason.UNDECODABLE, lambda s: b"\xc6\xff\xff\xff\xff" + b"x" * 16),
        ("payload-declared-2g", Reason.UNDECODABLE, lambda s: b"\x81\xa7payload\xc6\x7f\xff\xff\xff" + bytes(64)),
        ("ext32", Reason.UNDECODABLE, lambda s: b"\xc9\xff\xff\xff\xff\x01"),
        ("deeply-nested-maps", Reason.UNDECODABLE, lambda s: b"\x81\xa1a" * 20000 + b"\xc0"),
        ("nested-within-stack", Reason.INVALID_FIELD, lambda s: bent(fields(s), model=_nest(200))),
        ("not-a-map", Reason.UNDECODABLE, lambda s: packed([1, 2, 3])),  # type: ignore[arg-type]
        ("schema-version", Reason.SCHEMA_VERSION, lambda s: bent(fields(s), schema=2)),
        ("zero-dims", Reason.INVALID_FIELD, lambda s: bent(fields(s), shape=[0, 64, 2, 2])),
        ("negative-dims", Reason.INVALID_FIELD, lambda s: bent(fields(s), shape=[-2, 64, 2, 2])),
        ("dims-beyond-2**63", Reason.INVALID_FIELD, lambda s: bent(fields(s), shape=[2, 64, 2, 2**63])),
        ("byte-count-overflows", Reason.OVERSIZE, lambda s: bent(fields(s), shape=[1 << 16] * 4)),
        ("shape-mismatch", Reason.SHAPE_MISMATCH, lambda s: _other_shape(env, s)),
        ("size-mismatch", Reason.SIZE_MISMATCH, lambda s: bent(fields(s), payload=fields(s)["payload"][:-1])),
        ("oversize-body", Reason.OVERSIZE, lambda s: build(fields(s)) + bytes(MAX_MESSAGE_BYTES)),
        ("nan-targets", Reason.BAD_TARGETS, lambda s: _bad_targets(env, s, np.nan)),
        ("class-out-of-range", Reason.BAD_TARGETS, lambda s: _bad_targets(env, s, 1e6)),
        ("model-mismatch", Reason.MODEL_MISMATCH, lambda s: _other_model(env, s)),
        ("job-mismatch", Reason.INVALID_FIELD, lambda s: bent(fields(s), job="otherjob")),
        ("no-user-id", Reason.USER_ID_MISMATCH, lambda s: build(fields(s))),
        ("user-id-of-other-edge", Reason.USER_ID_MISMATCH, lambda s: build(fields(s, edge="edge-b"))),
        ("wrong-content-type", Reason.UNDECODABLE, lambda s: build(fields(s))),
        ("wrong-amqp-type", Reason.INVALID_FIELD, lambda s: build(fields(s))),
        ("replayed-id-other-batch", Reason.INVALID_FIELD, lambda s: build(fields(0))),
    ]
    cases += [
        (f"wrong-type-{key}", Reason.SCHEMA_VERSION if key == "schema" else Reason.INVALID_FIELD, _wrong(fields, key))
        for key in WRONG_TYPES
    ]
    result = []
    for i, (name, reason, make) in enumerate(cases):
        body = make(100 + i)
        result.append(
            Hostile(
                name,
                body,
                reason,
                user_id=None if name == "no-user-id" else "edge-a",
                content_type="text/plain" if name == "wrong-content-type" else CONTENT_TYPE,
                type="mistnet.other" if name == "wrong-amqp-type" else MESSAGE_TYPE,
            )
        )
    start = 100 + len(result)
    refs: list[tuple[str, Reason, dict[str, Any]]] = []
    for name, reason in (
        ("sha256-mismatch", Reason.SHA256_MISMATCH),
        ("missing-object", Reason.MISSING_OBJECT),
        ("ref-outside-prefix", Reason.REF_OUTSIDE_PREFIX),
        ("ref-other-bucket", Reason.REF_OUTSIDE_PREFIX),
        ("ref-dotdot-key", Reason.REF_OUTSIDE_PREFIX),
        ("object-larger-than-claimed", Reason.OVERSIZE),
    ):
        # Different images for the object-larger-than-claimed case: its key must not be the sha256 case's.
        refs.append((name, reason, fields(start + len(refs), start=2 if name.startswith("object") else 0)))
    await as_ref(refs[0][2], s3, data=bytes(len(refs[0][2]["payload"])))
    _ref(refs[1][2], f"s3://{s3.bucket}/{names.feature_object_key(job, 'edge-a', '0' * 64)}")
    await as_ref(refs[2][2], s3, key=names.feature_object_key(job, "edge-b", "1" * 64))
    _ref(refs[3][2], f"s3://not-{s3.bucket}/{names.feature_object_key(job, 'edge-a', '2' * 64)}")
    _ref(refs[4][2], f"s3://{s3.bucket}/{names.edge_prefix(job, 'edge-a')}../edge-b/x.bin")
    await as_ref(refs[5][2], s3, data=refs[5][2]["payload"] + bytes(1 << 16))
    result += [Hostile(name, build(f), reason) for name, reason, f in refs]
    return result


def _wrong(fields: Callable[..., dict[str, Any]], key: str) -> Callable[[int], bytes]:
    return lambda seq: bent(fields(seq), **{key: WRONG_TYPES[key]})


def _nest(depth: int) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for _ in range(depth):
        nested = {"a": nested}
    return nested


def _ref(fields: dict[str, Any], uri: str) -> None:
    payload: bytes = fields.pop("payload")
    fields["ref"] = BlobRef(uri=uri, size=len(payload), sha256=sha256_hex(payload))


def _other_shape(env: Env, seq: int) -> bytes:
    bits = np.zeros((2, 64, 1, 1), dtype=bool)
    return build(
        batch_fields(env.job, "edge-a", seq, "train", (bits, env.released.images(0, 2)[1]), spec=env.released.spec)
    )


def _bad_targets(env: Env, seq: int, value: float) -> bytes:
    bits, targets = env.released.images(0, 2)
    targets[0, 1] = value
    return build(batch_fields(env.job, "edge-a", seq, "train", (bits, targets), spec=env.released.spec))


def _other_model(env: Env, seq: int) -> bytes:
    spec = env.released.spec.model_copy(update={"extractor_sha256": "f" * 64})
    return build(batch_fields(env.job, "edge-a", seq, "train", env.released.images(0, 2), spec=spec))


def publish_with_pika(broker: Broker, messages: list[tuple[str, Hostile]]) -> dict[str, str]:
    """Publish ``(message_id, case)`` pairs as edge-a with confirms; returns the broker's refusals by case."""
    refused: dict[str, str] = {}
    connection = pika.BlockingConnection(pika.URLParameters(broker.edge_url("edge-a")))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for message_id, case in messages:
            properties = pika.BasicProperties(
                content_type=case.content_type,
                type=case.type,
                message_id=message_id,
                user_id=case.user_id,
                delivery_mode=2,
            )
            try:
                channel.basic_publish(
                    names.FEATURES_EXCHANGE,
                    names.features_routing_key(broker.job, "edge-a"),
                    case.body,
                    properties=properties,
                    mandatory=True,
                )
            except ChannelClosedByBroker as exc:
                refused[case.name] = f"{exc.reply_code} {exc.reply_text}"
                channel = connection.channel()
                channel.confirm_delivery()
    finally:
        connection.close()
    return refused


def publish_with_management_api(broker: Broker, body: bytes, message_id: str, user_id: str | None) -> dict[str, Any]:
    """POST /api/exchanges/VHOST/mistnet.features/publish as the admin (guest)."""
    properties: dict[str, Any] = {"content_type": CONTENT_TYPE, "type": MESSAGE_TYPE, "message_id": message_id}
    if user_id is not None:
        properties["user_id"] = user_id
    request = urllib.request.Request(
        f"{MGMT_URL}/api/exchanges/{broker.vhost}/{names.FEATURES_EXCHANGE}/publish",
        data=json.dumps(
            {
                "properties": properties,
                "routing_key": names.features_routing_key(broker.job, "edge-a"),
                "payload": base64.b64encode(body).decode(),
                "payload_encoding": "base64",
            }
        ).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError as exc:
        return {"error": exc.code, "reason": exc.read().decode(errors="replace")}

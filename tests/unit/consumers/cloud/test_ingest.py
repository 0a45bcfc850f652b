"""Ingest's checks in order, with a local-folder blob store: what each refusal says, and storing once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumers.cloud.ingest import (
    DETAIL_HEADER,
    REASON_HEADER,
    Delivery,
    Duplicate,
    Expectations,
    Rejected,
    Stored,
    check_envelope,
    dead_letter,
    ingest,
)
from consumers.cloud.store import FeatureStore
from shared.blob.store import FileBlobStore
from shared.config.cloud import parse_edge_users
from shared.privacy import privacy_params
from shared.wire import names
from shared.wire.features import (
    CONTENT_TYPE,
    MESSAGE_TYPE,
    BlobRef,
    FeatureBatch,
    ModelSpec,
    PrivacyBlock,
    Reason,
    WireError,
    WireLimits,
    encode_batch,
    encode_targets,
    pack_bits,
    sha256_hex,
)

JOB = "job"
CHW = (64, 2, 2)
SPEC = ModelSpec(arch="yolov5n", cut_layer=4, img_size=64, extractor_sha256="a" * 64)
PRIVACY = privacy_params("rr-sym", 100.0)
EXPECT = Expectations(
    job=JOB,
    model=SPEC,
    feature_chw=CHW,
    privacy=PRIVACY,
    num_classes=80,
    bucket="bucket",
    limits=WireLimits(),
    speakers=parse_edge_users("gw=edge-c"),
)


def fields(edge: str = "edge-a", seq: int = 0, **overrides: Any) -> dict[str, Any]:
    bits = np.random.default_rng(seq).random((2, *CHW)) < 0.5
    base: dict[str, Any] = {
        "schema": 1,
        "type": MESSAGE_TYPE,
        "job": JOB,
        "edge": edge,
        "seq": seq,
        "split": "train",
        "created_at": time.time(),
        "model": SPEC,
        "privacy": PrivacyBlock.model_validate(PRIVACY.to_wire(int(np.prod(CHW)))),
        "shape": [2, *CHW],
        "encoding": "packbits",
        "payload": pack_bits(bits),
        "image_ids": ["00000000", "11111111"],
        "targets": encode_targets(np.array([[0, 1, 0.5, 0.5, 0.2, 0.2]], np.float32)),
    }
    base.update(overrides)
    return base


def delivery(f: dict[str, Any], user: str | None = None, **props: Any) -> Delivery:
    base: dict[str, Any] = {
        "body": encode_batch(FeatureBatch.model_validate(f)),
        "message_id": names.feature_message_id(f["job"], f["edge"], f["seq"]),
        "user_id": user or f["edge"],
        "type": MESSAGE_TYPE,
        "content_type": CONTENT_TYPE,
        "routing_key": f"{JOB}.{user or f['edge']}",
    }
    base.update(props)
    return Delivery(**base)


def refused(d: Delivery) -> WireError:
    with pytest.raises(WireError) as info:
        check_envelope(d, EXPECT)
    return info.value


class TestCheckEnvelope:
    """Each rule refuses with its reason, before anything is downloaded."""

    def test_valid(self) -> None:
        assert check_envelope(delivery(fields()), EXPECT).edge == "edge-a"

    def test_content_and_message_type(self) -> None:
        assert refused(delivery(fields(), content_type="application/json")).reason is Reason.UNDECODABLE
        assert refused(delivery(fields(), type="other")).reason is Reason.INVALID_FIELD

    def test_other_job(self) -> None:
        error = refused(delivery(fields(job="other")))
        assert error.reason is Reason.INVALID_FIELD and "job" in error.detail

    def test_speaker_mapping(self) -> None:
        assert check_envelope(delivery(fields(edge="edge-c"), user="gw"), EXPECT).edge == "edge-c"
        assert refused(delivery(fields(edge="edge-a"), user="gw")).reason is Reason.USER_ID_MISMATCH
        assert refused(delivery(fields(), user_id=None)).reason is Reason.USER_ID_MISMATCH

    def test_message_id_must_be_the_batch_own(self) -> None:
        # Otherwise an edge could claim another batch's id and have the real one dropped as a duplicate.
        error = refused(delivery(fields(seq=1), message_id=names.feature_message_id(JOB, "edge-a", 0)))
        assert error.reason is Reason.INVALID_FIELD and "message id" in error.detail

    def test_privacy_must_match_the_job(self) -> None:
        other = privacy_params("rr-sym", 10.0)
        f = fields(privacy=PrivacyBlock.model_validate(other.to_wire(int(np.prod(CHW)))))
        error = refused(delivery(f))
        assert error.reason is Reason.INVALID_FIELD and "privacy" in error.detail

    def test_ref_bucket_and_key(self) -> None:
        payload = fields()["payload"]
        size, digest = len(payload), sha256_hex(payload)
        good = f"{names.edge_prefix(JOB, 'edge-a')}x.bin"
        ok = fields(payload=None, ref=BlobRef(uri=f"s3://bucket/{good}", size=size, sha256=digest))
        assert check_envelope(delivery(ok), EXPECT).ref is not None
        for uri in (
            f"s3://other-bucket/{good}",
            f"s3://bucket/{names.edge_prefix(JOB, 'edge-a')}../edge-b/x.bin",
            f"s3://bucket/{names.edge_prefix(JOB, 'edge-b')}x.bin",
        ):
            f = fields(payload=None, ref=BlobRef(uri=uri, size=size, sha256=digest))
            assert refused(delivery(f)).reason is Reason.REF_OUTSIDE_PREFIX, uri


class TestIngest:
    """A valid batch is stored once; a bad one is rejected; a dead letter carries the reason."""

    async def test_store_once_and_by_reference(self, tmp_path: Path) -> None:
        store = FeatureStore(tmp_path / "store")
        blobs = FileBlobStore(tmp_path / "blobs", "bucket")
        d = delivery(fields())
        assert isinstance(await ingest(d, EXPECT, blobs, store), Stored)
        assert await ingest(d, EXPECT, blobs, store) == Duplicate("edge-a")
        f = fields(seq=1)
        payload = f.pop("payload")
        key = names.feature_object_key(JOB, "edge-a", sha256_hex(payload))
        await blobs.put(key, payload)
        f["ref"] = BlobRef(uri=f"s3://bucket/{key}", size=len(payload), sha256=sha256_hex(payload))
        outcome = await ingest(delivery(f), EXPECT, blobs, store)
        assert isinstance(outcome, Stored) and outcome.wire_bytes > len(payload)
        assert [b.path.read_bytes() for b in store.batches("train")][1] == payload

    async def test_missing_object_and_bad_targets(self, tmp_path: Path) -> None:
        store = FeatureStore(tmp_path / "store")
        blobs = FileBlobStore(tmp_path / "blobs", "bucket")
        payload = fields()["payload"]
        key = f"{names.edge_prefix(JOB, 'edge-a')}gone.bin"
        f = fields(payload=None, ref=BlobRef(uri=f"s3://bucket/{key}", size=len(payload), sha256=sha256_hex(payload)))
        outcome = await ingest(delivery(f), EXPECT, blobs, store)
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.MISSING_OBJECT
        bad = fields(targets=encode_targets(np.array([[5, 1, 0.5, 0.5, 0.2, 0.2]], np.float32)))
        outcome = await ingest(delivery(bad), EXPECT, blobs, store)
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.BAD_TARGETS
        assert store.batches("train") == []

    def test_dead_letter(self) -> None:
        d = delivery(fields(), routing_key=f"{JOB}.edge-a")
        message = dead_letter(d, JOB, Rejected(Reason.SHA256_MISMATCH, "payload sha256 does not match"))
        assert (message.exchange, message.routing_key) == (names.DEAD_LETTER_EXCHANGE, f"{JOB}.edge-a")
        assert message.headers is not None and message.headers[REASON_HEADER] == "sha256-mismatch"
        assert message.headers[DETAIL_HEADER] == "payload sha256 does not match"
        assert message.body == d.body and message.user_id is None
        odd = dead_letter(Delivery(b"x", None, None, None, None, "weird key!"), JOB, Rejected(Reason.UNDECODABLE, "x"))
        assert odd.routing_key == f"{JOB}.unknown" and odd.message_id.startswith("dead:")

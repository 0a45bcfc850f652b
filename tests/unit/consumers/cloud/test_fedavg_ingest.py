"""Ingesting FedAvg updates: envelope checks before any download, tensor checks after, stragglers discarded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from consumers.cloud.fedavg.ingest import (
    StoredUpdateOutcome,
    Straggler,
    UpdateExpectations,
    check_update_envelope,
    ingest_update,
)
from consumers.cloud.fedavg.store import NewUpdate, RoundStart, UpdateStore
from consumers.cloud.ingest import Delivery, Duplicate, Rejected
from shared.blob.store import FileBlobStore
from shared.config.cloud import EdgeUsers
from shared.training.fedavg import delta_state, serialize_update, update_layout
from shared.wire import names
from shared.wire.features import CONTENT_TYPE, Reason, WireError, sha256_hex
from shared.wire.update import UPDATE_TYPE, UpdateMessage, encode_update
from tests.unit.wire.test_fedavg_messages import update_fields

JOB, BUCKET, GLOBAL_SHA = "job", "bucket", "b" * 64
STATE = {
    "model.0.conv.weight": torch.ones(2, 1, 1, 1),
    "model.0.bn.num_batches_tracked": torch.tensor(5),
}
EXPECT = UpdateExpectations(
    job=JOB,
    bucket=BUCKET,
    speakers=EdgeUsers({}),
    expected=frozenset({"edge-a", "edge-b"}),
    layout=update_layout(STATE),
    max_object_bytes=1 << 30,
)


class Env:
    """A local blob store and an update store with round 1 open."""

    def __init__(self, tmp: Path):
        self.blobs = FileBlobStore(tmp / "blobs", BUCKET)
        self.store = UpdateStore(tmp / "store")
        self.store.start_round(RoundStart(1, GLOBAL_SHA, "s3://bucket/g", 10, 100, 0.0, None))

    def upload(
        self, tensors: dict[str, torch.Tensor], *, edge: str = "edge-a", round_no: int = 1, **bend: Any
    ) -> Delivery:
        """Upload ``tensors`` as ``edge``'s update and return the delivery announcing it (``bend``: fields)."""
        blob = serialize_update(tensors, {})
        key = names.update_object_key(JOB, edge, round_no, sha256_hex(blob))
        asyncio.run(self.blobs.put(key, blob))
        ref = {"uri": f"s3://{BUCKET}/{key}", "size": len(blob), "sha256": sha256_hex(blob)}
        fields = update_fields(job=JOB, edge=edge, round=round_no, base_sha256=GLOBAL_SHA, ref=ref)
        fields.update(bend)
        return delivery(fields)

    def ingest(self, d: Delivery) -> object:
        return asyncio.run(ingest_update(d, EXPECT, self.blobs, self.store))


def delivery(fields: dict[str, Any], **props: Any) -> Delivery:
    values: dict[str, Any] = {
        "body": encode_update(UpdateMessage.model_validate(fields)),
        "message_id": names.update_message_id(fields["job"], fields["edge"], fields["round"]),
        "user_id": fields["edge"],
        "type": UPDATE_TYPE,
        "content_type": CONTENT_TYPE,
        "routing_key": names.features_routing_key(fields["job"], fields["edge"]),
    }
    values.update(props)
    return Delivery(**values)


def zeros() -> dict[str, torch.Tensor]:
    return delta_state(STATE, STATE)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


class TestEnvelope:
    """Identity, routing, prefix and size are checked from the message alone."""

    @pytest.mark.parametrize(
        ("bend", "props", "reason"),
        [
            ({}, {"user_id": "edge-b"}, Reason.USER_ID_MISMATCH),
            ({}, {"routing_key": "job.edge-b"}, Reason.INVALID_FIELD),
            ({}, {"message_id": "update:job:edge-a:2"}, Reason.INVALID_FIELD),
            ({}, {"type": "mistnet.features"}, Reason.INVALID_FIELD),
            (
                {"job": "other"},
                {"routing_key": "other.edge-a", "message_id": "update:other:edge-a:1"},
                Reason.INVALID_FIELD,
            ),
            (
                {"ref": {"uri": "s3://bucket/job/updates/edge-b/x", "size": 1, "sha256": "c" * 64}},
                {},
                Reason.REF_OUTSIDE_PREFIX,
            ),
            (
                {"ref": {"uri": "s3://other/job/updates/edge-a/x", "size": 1, "sha256": "c" * 64}},
                {},
                Reason.REF_OUTSIDE_PREFIX,
            ),
            (
                {"ref": {"uri": "s3://bucket/job/updates/edge-a/../edge-b/x", "size": 1, "sha256": "c" * 64}},
                {},
                Reason.REF_OUTSIDE_PREFIX,
            ),
            (
                {"ref": {"uri": "s3://bucket/job/updates/edge-a/x", "size": 1 << 30, "sha256": "c" * 64}},
                {},
                Reason.OVERSIZE,
            ),
        ],
        ids=[
            "user",
            "routing-key",
            "message-id",
            "type",
            "job",
            "foreign-prefix",
            "foreign-bucket",
            "dotdot",
            "oversize",
        ],
    )
    def test_refused(self, bend: dict[str, Any], props: dict[str, Any], reason: Reason) -> None:
        with pytest.raises(WireError) as err:
            check_update_envelope(delivery(update_fields(**bend), **props), EXPECT)
        assert err.value.reason == reason

    def test_unexpected_edge(self) -> None:
        fields = update_fields(
            edge="edge-z", ref={"uri": "s3://bucket/job/updates/edge-z/x", "size": 1, "sha256": "c" * 64}
        )
        with pytest.raises(WireError, match="not one of the job's expected edges"):
            check_update_envelope(delivery(fields), EXPECT)


class TestIngest:
    """Valid updates are stored once; bad tensors are refused; late ones are discarded, never averaged."""

    def test_stored_then_duplicate(self, env: Env) -> None:
        d = env.upload(zeros())
        outcome = env.ingest(d)
        assert isinstance(outcome, StoredUpdateOutcome) and outcome.wire_bytes > len(d.body)
        assert env.store.reported(1) == {"edge-a": 3}
        assert env.ingest(d) == Duplicate("edge-a")

    def test_sha_mismatch(self, env: Env) -> None:
        d = env.upload(zeros())
        key = next((env.blobs.root / BUCKET).rglob("*.safetensors"))
        key.write_bytes(key.read_bytes()[:-1] + b"\x01")
        assert env.ingest(d) == Rejected(Reason.SHA256_MISMATCH, "update sha256 does not match the reference")

    def test_nan_and_shape(self, env: Env) -> None:
        nan = zeros()
        nan["model.0.conv.weight"][0] = float("nan")
        outcome = env.ingest(env.upload(nan))
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.NON_FINITE
        wrong = zeros()
        wrong["model.0.conv.weight"] = torch.zeros(2, 1, 1, 2, dtype=torch.float16)
        outcome = env.ingest(env.upload(wrong, edge="edge-b"))
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.MODEL_MISMATCH
        assert env.store.reported(1) == {}

    def test_round_and_base_checks(self, env: Env) -> None:
        outcome = env.ingest(env.upload(zeros(), round_no=2))
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.WRONG_ROUND
        outcome = env.ingest(env.upload(zeros(), base_sha256="d" * 64))
        assert isinstance(outcome, Rejected) and outcome.reason is Reason.MODEL_MISMATCH

    def test_straggler_discarded(self, env: Env) -> None:
        env.store.close_round(1)
        env.store.start_round(RoundStart(2, "e" * 64, "s3://bucket/g2", 10, 100, 1.0, None))
        late = env.upload(zeros())
        assert env.ingest(late) == Straggler("edge-a", 1, first_time=True)
        assert env.ingest(late) == Duplicate("edge-a")  # a redelivery is not counted twice
        assert env.store.reported(1) == {} and env.store.reported(2) == {}
        assert env.store.stragglers_during(2) == [{"edge": "edge-a", "round": 1}]

    def test_store_refuses_closed_round(self, env: Env) -> None:
        """The race: a round closes between an update's round check and its storing."""
        update = NewUpdate(1, "edge-a", "update:job:edge-a:1", 3, "f" * 64, b"x", 10, {})
        env.store.close_round(1)
        assert env.store.put_update(update) == "closed"
        assert env.store.reported(1) == {}

"""FedAvg wire messages: start-round / stop (JSON) and update (msgpack) round-trip; malformed ones are refused."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from shared.wire import names
from shared.wire.control import START_ROUND_TYPE, STOP_TYPE, StartRound, StopJob, decode_control
from shared.wire.features import BlobRef, Reason, WireError
from shared.wire.update import FEDAVG_PRIVACY_NOTE, UPDATE_TYPE, UpdateMessage, decode_update, encode_update

JSON = "application/json"
REF = BlobRef(uri="s3://bucket/job/fedavg/global/round-0001/model.safetensors", size=100, sha256="a" * 64)


def start_round(**bend: Any) -> StartRound:
    fields: dict[str, Any] = {
        "job": "job",
        "created_at": 1.0,
        "round": 1,
        "rounds": 2,
        "model": REF,
        "arch": "yolov5n",
        "nc": 80,
        "img_size": 64,
        "epochs": 1,
        "batch_size": 2,
        "learning_rate": 0.01,
        "optimizer": "sgd",
        "momentum": 0.937,
        "weight_decay": 0.0005,
        "seed": 0,
        "deadline_at": None,
    }
    fields.update(bend)
    return StartRound.model_validate(fields)


def update_fields(**bend: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "schema": 1,
        "type": UPDATE_TYPE,
        "job": "job",
        "edge": "edge-a",
        "round": 1,
        "created_at": 1.0,
        "base_sha256": "b" * 64,
        "samples": 3,
        "epochs": 1,
        "encoding": "delta",
        "dtype": "float16",
        "ref": {"uri": "s3://bucket/job/updates/edge-a/round-0001/x.safetensors", "size": 10, "sha256": "c" * 64},
        "measurements": {
            "train_s": 1.5,
            "flops": 1e9,
            "peak_rss_bytes": 1 << 20,
            "steps": 2,
            "skipped_steps": 0,
            "losses": {"box": 0.1, "obj": 0.2, "cls": 0.3},
            "download_bytes": 100,
            "download_s": 0.1,
        },
        "privacy": {"mechanism": "fedavg", "epsilon": None, "note": FEDAVG_PRIVACY_NOTE},
    }
    fields.update(bend)
    return fields


class TestControl:
    """start-round and stop decode back to themselves; anything else is refused with a reason."""

    def test_round_trip(self) -> None:
        start = start_round(deadline_at=123.5)
        assert decode_control(start.to_json(), JSON, START_ROUND_TYPE) == start
        assert start.message_id == names.start_round_message_id("job", 1) == "start-round:job:1"
        stop = StopJob(job="job", created_at=2.0, rounds=2, reason="job completed")
        assert decode_control(stop.to_json(), JSON, STOP_TYPE) == stop
        assert json.loads(start.to_json())["model"] == REF.model_dump()  # a claim check, never the model

    @pytest.mark.parametrize(
        ("body", "content_type", "kind", "reason"),
        [
            (b"{}", "application/msgpack", START_ROUND_TYPE, Reason.UNDECODABLE),
            (b"{}", JSON, "mistnet.other", Reason.INVALID_FIELD),
            (b"not json", JSON, START_ROUND_TYPE, Reason.UNDECODABLE),
            (b"[1]", JSON, START_ROUND_TYPE, Reason.UNDECODABLE),
            (b" " * (65 << 10), JSON, START_ROUND_TYPE, Reason.OVERSIZE),
            (json.dumps({"schema": 2}).encode(), JSON, START_ROUND_TYPE, Reason.SCHEMA_VERSION),
            (start_round().to_json(), JSON, STOP_TYPE, Reason.INVALID_FIELD),
            (
                start_round().to_json().replace(b'"round": 1', b'"round": 0'),
                JSON,
                START_ROUND_TYPE,
                Reason.INVALID_FIELD,
            ),
            (
                start_round().to_json().replace(b'"epochs": 1', b'"epochs": "1"'),
                JSON,
                START_ROUND_TYPE,
                Reason.INVALID_FIELD,
            ),
        ],
        ids=[
            "content-type",
            "type",
            "not-json",
            "not-object",
            "oversize",
            "schema",
            "type-mismatch",
            "round-0",
            "string",
        ],
    )
    def test_refused(self, body: bytes, content_type: str, kind: str, reason: Reason) -> None:
        with pytest.raises(WireError) as err:
            decode_control(body, content_type, kind)
        assert err.value.reason == reason


class TestUpdateMessage:
    """An update message round-trips; bounds and fields are checked before anything is fetched."""

    def test_round_trip(self) -> None:
        message = UpdateMessage.model_validate(update_fields())
        assert decode_update(encode_update(message)) == message
        assert names.update_message_id("job", "edge-a", 1) == "update:job:edge-a:1"
        assert names.update_object_key("job", "edge-a", 3, "f" * 64).startswith(names.update_prefix("job", "edge-a"))

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            (update_fields(schema=2), Reason.SCHEMA_VERSION),
            (update_fields(samples=0), Reason.INVALID_FIELD),
            (update_fields(dtype="float32"), Reason.INVALID_FIELD),
            (update_fields(extra="field"), Reason.INVALID_FIELD),
            (update_fields(privacy={"mechanism": "fedavg", "epsilon": 1.0, "note": "x"}), Reason.INVALID_FIELD),
            (update_fields(payload=b"inline model"), Reason.UNDECODABLE),  # no bytes are ever inline
        ],
        ids=["schema", "no-samples", "dtype", "extra-field", "epsilon", "inline-bytes"],
    )
    def test_refused(self, fields: dict[str, Any], reason: Reason) -> None:
        with pytest.raises(WireError) as err:
            decode_update(msgpack.packb(fields, use_bin_type=True))
        assert err.value.reason == reason

    def test_oversize_and_garbage(self) -> None:
        with pytest.raises(WireError, match="oversize"):
            decode_update(b"\x00" * (65 << 10))
        with pytest.raises(WireError, match="undecodable"):
            decode_update(b"\xc1")

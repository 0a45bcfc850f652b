"""The feature-batch codec: round trip, and each rule a hostile or broken message can break."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import pytest

from shared.privacy import privacy_params
from shared.wire.features import (
    FeatureBatch,
    Reason,
    WireError,
    WireLimits,
    check_payload,
    decode_batch,
    decode_targets,
    encode_batch,
    encode_targets,
    pack_bits,
    sha256_hex,
    unpack_bits,
)

SHAPE = (3, 8, 4, 4)


def _raw(**changes: Any) -> dict[str, Any]:
    bits = np.random.default_rng(0).random(SHAPE) > 0.5
    payload = pack_bits(bits)
    raw: dict[str, Any] = {
        "schema": 1,
        "type": "mistnet.features",
        "job": "job1",
        "edge": "edge-a",
        "seq": 7,
        "split": "train",
        "created_at": time.time(),
        "model": {"arch": "yolov5n", "cut_layer": 4, "img_size": 32, "extractor_sha256": "a" * 64},
        "privacy": privacy_params("rr-sym", 8.0).to_wire(8 * 4 * 4),
        "shape": list(SHAPE),
        "encoding": "packbits",
        "payload": payload,
        "image_ids": ["0123456789abcdef"] * 3,
        "targets": encode_targets(np.array([[0, 1, 0.5, 0.5, 0.2, 0.2], [2, 3, 0.1, 0.9, 0.1, 0.1]])).model_dump(),
    }
    raw.update(changes)
    return raw


def _body(**changes: Any) -> bytes:
    body: bytes = msgpack.packb(_raw(**changes), use_bin_type=True)
    return body


DEFAULT_LIMITS = WireLimits()


def _reason(body: bytes, limits: WireLimits = DEFAULT_LIMITS) -> Reason:
    with pytest.raises(WireError) as info:
        decode_batch(body, limits)
    return info.value.reason


class TestRoundTrip:
    """Encoding then decoding gives back the bits, targets and every field."""

    def test_round_trip(self) -> None:
        batch = decode_batch(_body(), WireLimits())
        again = decode_batch(encode_batch(batch), WireLimits())
        assert again == batch
        assert batch.payload is not None
        bits = unpack_bits(batch.payload, batch.dims)
        assert bits.shape == SHAPE and bits.dtype == np.bool_
        assert np.array_equal(bits, np.random.default_rng(0).random(SHAPE) > 0.5)
        assert decode_targets(batch, 80).shape == (2, 6)

    def test_ref_form(self) -> None:
        payload = pack_bits(np.zeros(SHAPE, dtype=bool))
        ref = {"uri": "s3://bucket/job1/features/edge-a/x.bin", "size": len(payload), "sha256": sha256_hex(payload)}
        raw = _raw(ref=ref)
        del raw["payload"]
        batch = decode_batch(msgpack.packb(raw, use_bin_type=True), WireLimits())
        assert batch.ref is not None and (batch.ref.bucket, batch.ref.key) == ("bucket", "job1/features/edge-a/x.bin")
        check_payload(batch, payload)
        with pytest.raises(WireError) as info:
            check_payload(batch, b"\x01" + payload[1:])
        assert info.value.reason is Reason.SHA256_MISMATCH

    def test_packed_size_is_one_bit_per_value(self) -> None:
        assert len(FeatureBatch.model_validate(_raw()).payload or b"") == 3 * 8 * 4 * 4 // 8


class TestRejections:
    """Every malformed message is refused with the rule it broke, before anything is allocated."""

    def test_undecodable(self) -> None:
        assert _reason(b"\xc1\xff garbage") is Reason.UNDECODABLE
        assert _reason(msgpack.packb([1, 2, 3])) is Reason.UNDECODABLE

    def test_huge_declared_length(self) -> None:
        # bin32 header claiming 4 GiB followed by 3 bytes.
        assert _reason(b"\x81\xa1a\xc6\xff\xff\xff\xffabc") is Reason.UNDECODABLE

    def test_deep_nesting(self) -> None:
        assert _reason(b"\x91" * 100_000 + b"\x00") is Reason.UNDECODABLE

    def test_schema_version(self) -> None:
        assert _reason(_body(schema=2)) is Reason.SCHEMA_VERSION

    @pytest.mark.parametrize(
        "changes",
        [
            {"seq": "7"},
            {"seq": -1},
            {"job": "../etc"},
            {"edge": "Edge A"},
            {"split": "test"},
            {"shape": [3, 8, 4]},
            {"shape": [0, 8, 4, 4]},
            {"shape": [-3, 8, 4, 4]},
            {"encoding": "raw"},
            {"created_at": float("nan")},
            {"image_ids": ["x.jpg"] * 3},
            {"model": {"arch": "yolov5n"}},
            {"extra_field": 1},
            {"payload": "text"},
        ],
    )
    def test_invalid_fields(self, changes: dict[str, Any]) -> None:
        assert _reason(_body(**changes)) is Reason.INVALID_FIELD

    def test_payload_and_ref_both_or_neither(self) -> None:
        raw = _raw()
        del raw["payload"]
        assert _reason(msgpack.packb(raw, use_bin_type=True)) is Reason.INVALID_FIELD

    def test_shape_mismatches(self) -> None:
        assert _reason(_body(image_ids=["0123456789abcdef"] * 2)) is Reason.SHAPE_MISMATCH
        assert _reason(_body(payload=b"\x00" * 10)) is Reason.SIZE_MISMATCH

    def test_overflowing_shape(self) -> None:
        huge = [4096, 65536, 65536, 65536]
        assert _reason(_body(shape=huge, image_ids=["0123456789abcdef"] * 4096)) is Reason.OVERSIZE

    def test_oversize_message(self) -> None:
        assert _reason(_body(), WireLimits(max_message_bytes=100)) is Reason.OVERSIZE

    def test_bad_targets(self) -> None:
        for rows in (
            [[0, 1, float("nan"), 0.5, 0.1, 0.1]],
            [[5, 1, 0.5, 0.5, 0.1, 0.1]],
            [[0, 80, 0.5, 0.5, 0.1, 0.1]],
            [[0, 1, 1.5, 0.5, 0.1, 0.1]],
            [[0, 1, 0.5, 0.5, 0.0, 0.1]],
            [[0, 1.5, 0.5, 0.5, 0.1, 0.1]],
        ):
            batch = decode_batch(_body(targets=encode_targets(np.array(rows)).model_dump()), WireLimits())
            with pytest.raises(WireError) as info:
                decode_targets(batch, 80)
            assert info.value.reason is Reason.BAD_TARGETS
        truncated = {"dtype": "<f4", "rows": 2, "data": b"\x00" * 20}
        assert _reason(_body(targets=truncated)) is Reason.BAD_TARGETS

"""Property-based fuzzing of the feature decoder: arbitrary bytes, and valid batches bent anywhere, never crash it.

Whatever reaches the decoder either comes out as a batch whose targets and payload can then be checked
and unpacked without error, or is refused with :class:`WireError`; no other exception, no allocation
beyond the limits.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.privacy import privacy_params
from shared.wire.features import (
    WireError,
    WireLimits,
    check_payload,
    decode_batch,
    decode_targets,
    encode_targets,
    pack_bits,
    unpack_bits,
)

LIMITS = WireLimits(max_message_bytes=1 << 16, max_images=64, max_bits=1 << 20)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=64),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_FIELDS = [
    "schema",
    "type",
    "job",
    "edge",
    "seq",
    "split",
    "created_at",
    "model",
    "privacy",
    "shape",
    "encoding",
    "payload",
    "ref",
    "image_ids",
    "targets",
]


def _decode(body: bytes) -> None:
    try:
        batch = decode_batch(body, LIMITS)
        decode_targets(batch, 80)
        if batch.payload is not None:
            check_payload(batch, batch.payload)
            assert unpack_bits(batch.payload, batch.dims).shape == batch.dims
    except WireError:
        pass  # our own validation error: the only exception allowed


SHAPE = (2, 8, 4, 4)


def _valid() -> dict[str, Any]:
    """A valid batch as a plain msgpack map (inline payload, two target rows)."""
    bits = np.random.default_rng(0).random(SHAPE) > 0.5
    return {
        "schema": 1,
        "type": "mistnet.features",
        "job": "job1",
        "edge": "edge-a",
        "seq": 3,
        "split": "train",
        "created_at": time.time(),
        "model": {"arch": "yolov5n", "cut_layer": 4, "img_size": 32, "extractor_sha256": "a" * 64},
        "privacy": privacy_params("rr-sym", 8.0).to_wire(8 * 4 * 4),
        "shape": list(SHAPE),
        "encoding": "packbits",
        "payload": pack_bits(bits),
        "image_ids": ["0123456789abcdef", "fedcba9876543210"],
        "targets": encode_targets(np.array([[0, 1, 0.5, 0.5, 0.2, 0.2], [1, 3, 0.1, 0.9, 0.1, 0.1]])).model_dump(),
    }


VALID = _valid()
#: Every path into the map (top-level fields and the fields of nested maps), for targeted bending.
_PATHS = [(k,) for k in VALID] + [(k, sub) for k, v in VALID.items() if isinstance(v, dict) for sub in v]
#: Values chosen to hit edges: zero, negatives, huge, float specials, wrong-type containers, long strings.
_EDGY = st.one_of(
    _values,
    st.sampled_from([0, -1, 1 << 16, (1 << 16) + 1, 1 << 62, 2**63 - 1, -(2**63), float("nan"), float("inf")]),
    st.lists(st.integers(-(2**31), 2**31), min_size=0, max_size=6),
    st.text(min_size=60, max_size=70),
    st.binary(min_size=0, max_size=40),
)


class TestDecoderFuzz:
    """Whatever the body, the decoder returns a valid batch or raises WireError, nothing else."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=512))
    def test_random_bytes(self, body: bytes) -> None:
        _decode(body)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.fixed_dictionaries({}, optional={name: _values for name in _FIELDS}))
    def test_random_maps_with_our_field_names(self, fields: dict[str, Any]) -> None:
        fields.setdefault("schema", 1)
        _decode(msgpack.packb(fields, use_bin_type=True))

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from(_PATHS), _EDGY | st.just(None)), min_size=1, max_size=3))
    def test_valid_batch_with_fields_bent(self, changes: list[tuple[tuple[str, ...], Any]]) -> None:
        raw = copy.deepcopy(VALID)
        for path, value in changes:
            target = raw
            for key in path[:-1]:
                target = target.get(key) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                continue  # an earlier change replaced the map this path leads into
            if value is None:
                target.pop(path[-1], None)  # a missing field
            else:
                target[path[-1]] = value
        _decode(msgpack.packb(raw, use_bin_type=True))

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_valid_body_with_bytes_flipped(self, data: st.DataObject) -> None:
        body = bytearray(msgpack.packb(VALID, use_bin_type=True))
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(body) - 1))
            body[at] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(1, len(body)))
        _decode(bytes(body[:cut]))

    def test_valid_batch_decodes(self) -> None:
        batch = decode_batch(msgpack.packb(VALID, use_bin_type=True), LIMITS)
        assert batch.dims == SHAPE and decode_targets(batch, 80).shape == (2, 6)

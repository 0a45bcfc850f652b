"""Property-based fuzzing of the feature decoder: arbitrary bytes never crash it."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.wire.features import WireError, WireLimits, decode_batch, decode_targets

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
    except WireError:
        pass  # our own validation error: the only exception allowed


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

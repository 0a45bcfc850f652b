"""Tests of producers.edge.done: counts and privacy of edge.done, refused when a batch is missing."""

from __future__ import annotations

import json

import pytest

from producers.edge.done import done_message_id, edge_done_event
from producers.edge.ledger import Totals
from shared.privacy import privacy_params
from shared.wire.events import parse_event

TOTALS = Totals(
    batches=3,
    confirmed_seqs_contiguous=True,
    images_released=10,
    train_images=8,
    val_images=2,
    bytes_sent=12345,
    images_skipped=1,
    epsilon_spent_max=8.0,
)


class TestEdgeDone:
    """The event carries the cumulative counts, the per-bit and per-image guarantees, and the skips."""

    def test_event(self) -> None:
        event = parse_event(edge_done_event("job", "edge-a", TOTALS, privacy_params("rr-sym", 4.0), 100).to_json())
        assert event["type"] == "edge.done" and event["source"] == "edge/edge-a"
        counts = ("images_released", "train_images", "val_images", "batches", "bytes_sent", "images_skipped")
        assert [event[k] for k in counts] == [10, 8, 2, 3, 12345, 1]
        assert event["privacy"] == {"mechanism": "rr-sym", "epsilon": 4.0, "epsilon_bit": 2.0, "epsilon_image": 200.0}
        assert event["epsilon_spent_max"] == 8.0
        assert json.loads(json.dumps(event)) == event

    def test_gap_is_refused(self) -> None:
        gap = Totals(**{**TOTALS.__dict__, "confirmed_seqs_contiguous": False})
        with pytest.raises(ValueError, match=r"not seqs 0\.\.2"):
            edge_done_event("job", "edge-a", gap, privacy_params("none", None), 100)

    def test_message_id_follows_the_counts(self) -> None:
        assert done_message_id("job", "edge-a", TOTALS) == "edge.done:job:edge-a:3:10"

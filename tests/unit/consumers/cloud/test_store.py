"""The feature store: durable batches deduplicated by message id, edges' announcements, rounds' bookkeeping."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from consumers.cloud.store import EdgeAnnouncement, FeatureStore, NewBatch, StoreError


def new_batch(seq: int, edge: str = "edge-a", split: str = "train", images: int = 2) -> NewBatch:
    targets = np.array([[0, 1, 0.5, 0.5, 0.2, 0.2], [images - 1, 2, 0.3, 0.3, 0.1, 0.1]], dtype=np.float32)
    return NewBatch(
        message_id=f"features:job:{edge}:{seq}",
        edge=edge,
        seq=seq,
        split=split,
        shape=(images, 8, 2, 2),
        payload=bytes(range(images * 4)),
        targets=targets,
        wire_bytes=100 + seq,
        created_at=time.time(),
    )


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore(tmp_path / "store")


class TestBatches:
    """A batch is stored once with its bits on disk; reads return it in arrival order."""

    def test_put_read_and_dedupe(self, store: FeatureStore) -> None:
        assert store.put(new_batch(0))
        assert not store.put(new_batch(0))
        assert store.put(new_batch(1, split="val"))
        assert store.put(new_batch(0, edge="edge-b"))
        (first, other) = store.batches("train")
        assert (first.edge, first.seq, first.shape) == ("edge-a", 0, (2, 8, 2, 2))
        assert first.path.read_bytes() == bytes(range(8))
        np.testing.assert_array_equal(first.targets, new_batch(0).targets)
        assert other.edge == "edge-b"
        assert [b.seq for b in store.batches("val")] == [1]
        assert store.has_message("features:job:edge-a:1")
        assert store.seqs_by_edge() == {"edge-a": {0, 1}, "edge-b": {0}}
        assert store.train_edges() == {"edge-a", "edge-b"}
        assert store.wire_bytes(0, store.last_batch_id()) == 100 + 101 + 100
        assert [b.id for b in store.batches("train", up_to_id=first.id)] == [first.id]

    def test_survives_reopening(self, tmp_path: Path) -> None:
        first = FeatureStore(tmp_path / "store")
        first.put(new_batch(0))
        first.close()
        again = FeatureStore(tmp_path / "store")
        assert len(again.batches("train")) == 1
        assert not again.put(new_batch(0))


class TestIdentity:
    """A store made for one job or model refuses another."""

    def test_bind(self, store: FeatureStore) -> None:
        store.bind({"job": "a", "cut_layer": "4"})
        store.bind({"job": "a", "cut_layer": "4"})
        with pytest.raises(StoreError, match="job='a'"):
            store.bind({"job": "b"})


class TestAnnouncementsAndRounds:
    """The latest edge.done per edge is kept; a round is committed with its training log."""

    def test_announcements(self, store: FeatureStore) -> None:
        store.announce(EdgeAnnouncement("edge-a", 2, 6, 2, "e1"))
        store.announce(EdgeAnnouncement("edge-a", 3, 9, 2, "e2"))
        assert store.announcements() == {"edge-a": EdgeAnnouncement("edge-a", 3, 9, 2, "e2")}

    def test_commit_and_publish(self, store: FeatureStore) -> None:
        store.put(new_batch(0))
        store.put(new_batch(1))
        ids = [b.id for b in store.batches("train")]
        store.commit_round(1, max(ids), {"type": "round.completed", "round": 1}, {(1, i): 2 for i in ids})
        (completed,) = store.completed_rounds()
        assert (completed.round, completed.watermark, completed.published) == (1, max(ids), False)
        assert completed.event["round"] == 1
        store.mark_published(1)
        assert store.completed_rounds()[0].published
        assert store.training_log() == {(1, 1): {i: 2 for i in ids}}

    def test_a_round_commits_once(self, store: FeatureStore) -> None:
        store.commit_round(1, 0, {}, {})
        with pytest.raises(Exception, match="UNIQUE"):
            store.commit_round(1, 0, {}, {})
        assert len(store.completed_rounds()) == 1

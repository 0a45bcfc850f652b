"""Stored bits to model input: the unpacking table, epoch plans and the loader thread."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from consumers.cloud.batching import FeatureLoader, plan_epoch, plan_in_order, unpack_into
from consumers.cloud.store import FeatureStore, NewBatch, StoredBatch
from shared.wire.features import pack_bits, unpack_bits


def stored_batches(
    tmp_path: Path, sizes: list[int], chw: tuple[int, int, int] = (8, 4, 4)
) -> tuple[list[StoredBatch], list[np.ndarray]]:
    store = FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    bits = []
    for seq, n in enumerate(sizes):
        b = rng.random((n, *chw)) < 0.5
        targets = np.array([[i, i % 3, 0.5, 0.5, 0.1 * (i + 1), 0.1] for i in range(n)], dtype=np.float32)
        store.put(NewBatch(f"m{seq}", "edge-a", seq, "train", (n, *chw), pack_bits(b), targets, 0, time.time()))
        bits.append(b)
    return store.batches("train"), bits


class TestUnpack:
    """The table expansion equals ``np.unpackbits`` as float32."""

    def test_matches_numpy(self) -> None:
        packed = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8)
        out = np.empty(8000, dtype=np.float32)
        unpack_into(packed, out)
        np.testing.assert_array_equal(out, np.unpackbits(packed).astype(np.float32))


class TestPlans:
    """An epoch plan holds every image exactly once; different epochs shuffle differently."""

    def test_epoch_plan_is_a_permutation(self, tmp_path: Path) -> None:
        batches, _ = stored_batches(tmp_path, [3, 4, 2])
        plan = plan_epoch(batches, 4, np.random.default_rng([0, 1, 1]))
        assert [len(step) for step in plan] == [4, 4, 1]
        slots = [slot for step in plan for slot in step]
        assert sorted(slots) == [(b, i) for b, n in enumerate([3, 4, 2]) for i in range(n)]
        other = plan_epoch(batches, 4, np.random.default_rng([0, 1, 2]))
        assert other != plan
        assert plan == plan_epoch(batches, 4, np.random.default_rng([0, 1, 1]))

    def test_in_order(self, tmp_path: Path) -> None:
        batches, _ = stored_batches(tmp_path, [3, 2])
        assert plan_in_order(batches, 2) == [[(0, 0), (0, 1)], [(0, 2), (1, 0)], [(1, 1)]]


class TestFeatureLoader:
    """Steps carry the right images and re-indexed targets, also when buffers are reused."""

    def test_steps_match_the_stored_bits(self, tmp_path: Path) -> None:
        batches, bits = stored_batches(tmp_path, [3, 4, 2, 5])
        loader = FeatureLoader(batches, batch_size=2, prefetch=2)
        plan = plan_epoch(batches, 2, np.random.default_rng(5))
        seen = 0
        for step in loader.steps(plan):
            for position, (b, i) in enumerate(step.slots):
                np.testing.assert_array_equal(step.features[position], bits[b][i].astype(np.float32))
                rows = step.targets[step.targets[:, 0] == position]
                np.testing.assert_array_equal(rows[:, 1:], batches[b].targets[batches[b].targets[:, 0] == i][:, 1:])
            seen += len(step.slots)
        assert seen == 14

    def test_payload_round_trip_with_wire_unpack(self, tmp_path: Path) -> None:
        batches, _ = stored_batches(tmp_path, [3])
        step = next(FeatureLoader(batches, 3).steps(plan_in_order(batches, 3)))
        payload = batches[0].path.read_bytes()
        np.testing.assert_array_equal(step.features.astype(bool), unpack_bits(payload, (3, 8, 4, 4)))

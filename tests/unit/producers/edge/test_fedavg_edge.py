"""The FedAvg edge's local pieces: which images train, the update outbox, seeds, and superseded rounds."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from types import SimpleNamespace

from producers.edge.fedavg.inbox import ControlInbox
from producers.edge.fedavg.local import train_samples, training_seed
from producers.edge.fedavg.outbox import UpdateOutbox, UpdateRecord
from producers.edge.intake import file_digest, split_of
from producers.edge.ledger import LEDGER_FILE, Ledger
from shared.wire.control import START_ROUND_TYPE, STOP_TYPE, StopJob
from tests.unit.wire.test_fedavg_messages import start_round


class TestTrainSamples:
    """Train images are the MistNet path's split=train (by content digest); val images never train."""

    def test_same_split_as_release(self, coco128: Path, tmp_path: Path) -> None:
        data = tmp_path / "data" / "images"
        data.mkdir(parents=True)
        originals = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:12]
        for image in originals:
            shutil.copy(image, data / image.name)
        shutil.copy(originals[0], data / "copy-of-first.jpg")  # the same picture twice trains once
        ledger = Ledger(tmp_path / "state" / LEDGER_FILE, "edge-a")
        try:
            chosen = train_samples(tmp_path / "data", ledger, val_fraction=0.5)
            again = train_samples(tmp_path / "data", ledger, val_fraction=0.5)  # from the digest cache
        finally:
            ledger.close()
        expected = {i.name for i in originals if split_of(file_digest(i), 0.5) == "train"}
        assert {s.image.name for s in chosen} - {"copy-of-first.jpg"} == expected
        assert 0 < len(expected) < 12 and len(chosen) == len(expected)
        assert chosen == again


class TestOutbox:
    """pending -> confirmed (bytes dropped); abandoned rounds stay abandoned; confirmed ones are never undone."""

    def test_states(self, tmp_path: Path) -> None:
        outbox = UpdateOutbox(tmp_path / LEDGER_FILE)
        record = UpdateRecord("job", 1, "update:job:edge-a:1", b"body", b"payload", "job/updates/edge-a/x", 3)
        outbox.persist(record)
        pending = outbox.get("job", 1)
        assert pending is not None and pending.state == "pending" and pending.record == record
        outbox.mark_confirmed("job", 1)
        outbox.abandon("job", 1, "too late")
        confirmed = outbox.get("job", 1)
        assert confirmed is not None and confirmed.state == "confirmed" and confirmed.record is None
        outbox.abandon("job", 2, "bad reference")
        assert outbox.rounds("job") == {1: "confirmed", 2: "abandoned"}
        assert outbox.get("other", 1) is None
        outbox.close()


class TestSeedsAndSuperseding:
    """Each edge and round shuffles differently; a waiting stop or later round supersedes the round in hand."""

    def test_training_seed(self) -> None:
        seeds = {training_seed(start_round(round=r), e) for r in (1, 2) for e in ("edge-a", "edge-b")}
        assert len(seeds) == 4 and training_seed(start_round(), "edge-a") == training_seed(start_round(), "edge-a")

    def test_moved_on(self) -> None:
        def message(body: bytes, kind: str) -> SimpleNamespace:
            return SimpleNamespace(body=body, content_type="application/json", type=kind)

        async def check() -> list[bool]:
            inbox = ControlInbox()
            current = start_round(round=2)
            results = [inbox.moved_on(current)]
            await inbox.put(message(start_round(round=2).to_json(), START_ROUND_TYPE))  # a re-publish: same round
            await inbox.put(message(b"garbage", START_ROUND_TYPE))
            results.append(inbox.moved_on(current))
            await inbox.put(message(start_round(round=3).to_json(), START_ROUND_TYPE))
            results.append(inbox.moved_on(current))
            stop_only = ControlInbox()
            await stop_only.put(
                message(StopJob(job="job", created_at=1.0, rounds=2, reason="done").to_json(), STOP_TYPE)
            )
            results.append(stop_only.moved_on(current))
            return results

        assert asyncio.run(check()) == [False, False, True, True]

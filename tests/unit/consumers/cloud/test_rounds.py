"""The round policy: when round 1 starts, that later rounds follow, and when the job is done."""

from __future__ import annotations

from consumers.cloud.rounds import FinishJob, Progress, RoundPolicy, StartRound, Wait, complete_edges, decide
from shared.config.cloud import ExpectedEdges

NAMED = ExpectedEdges(2, frozenset({"edge-a", "edge-b"}))


def progress(**kwargs: object) -> Progress:
    base: dict[str, object] = {"completed_rounds": 0, "waited_s": 0.0}
    base.update(kwargs)
    return Progress(**base)  # type: ignore[arg-type]


class TestCompleteEdges:
    """An edge is complete when it said done and every announced batch 0..n-1 is stored."""

    def test_needs_every_sequence_number(self) -> None:
        p = progress(announced={"a": 3, "b": 2}, stored_seqs={"a": {0, 2}, "b": {0, 1, 5}})
        assert complete_edges(p) == {"b"}


class TestDecide:
    """Round 1 waits for every expected edge (or the deadline and quorum); then rounds run to the end."""

    def test_waits_for_every_named_edge(self) -> None:
        p = progress(announced={"edge-a": 1}, stored_seqs={"edge-a": {0}}, train_edges={"edge-a"})
        decision = decide(RoundPolicy(2, NAMED), p)
        assert isinstance(decision, Wait)
        assert "1 of 2" in decision.reason and "edge-b" in decision.reason

    def test_waits_for_announced_batches(self) -> None:
        p = progress(
            announced={"edge-a": 2, "edge-b": 1},
            stored_seqs={"edge-a": {0}, "edge-b": {0}},
            train_edges={"edge-a", "edge-b"},
        )
        decision = decide(RoundPolicy(2, NAMED), p)
        assert isinstance(decision, Wait) and "edge-a 1/2 batches stored" in decision.reason

    def test_starts_when_all_complete(self) -> None:
        p = progress(
            announced={"edge-a": 1, "edge-b": 1}, stored_seqs={"edge-a": {0}, "edge-b": {0}}, train_edges={"edge-a"}
        )
        assert decide(RoundPolicy(2, NAMED), p) == StartRound(1, "all expected edges are complete: edge-a, edge-b")

    def test_unexpected_edges_do_not_count(self) -> None:
        p = progress(
            announced={"edge-a": 1, "edge-x": 1}, stored_seqs={"edge-a": {0}, "edge-x": {0}}, train_edges={"edge-x"}
        )
        assert isinstance(decide(RoundPolicy(2, NAMED), p), Wait)

    def test_count_accepts_any_names(self) -> None:
        p = progress(announced={"x": 1, "y": 1}, stored_seqs={"x": {0}, "y": {0}}, train_edges={"x", "y"})
        assert isinstance(decide(RoundPolicy(1, ExpectedEdges(2)), p), StartRound)

    def test_no_training_features_waits(self) -> None:
        p = progress(announced={"edge-a": 0, "edge-b": 0})
        decision = decide(RoundPolicy(1, NAMED), p)
        assert isinstance(decision, Wait) and "no training features" in decision.reason

    def test_deadline_with_quorum(self) -> None:
        policy = RoundPolicy(3, NAMED, min_edges=1, start_deadline_s=60)
        early = progress(waited_s=59, stored_seqs={"edge-a": {0, 1}}, train_edges={"edge-a"})
        assert isinstance(decide(policy, early), Wait)
        late = progress(waited_s=60, stored_seqs={"edge-a": {0, 1}}, train_edges={"edge-a"})
        assert isinstance(decide(policy, late), StartRound)

    def test_deadline_without_quorum_keeps_waiting(self) -> None:
        policy = RoundPolicy(3, NAMED, min_edges=2, start_deadline_s=10)
        decision = decide(policy, progress(waited_s=100, train_edges={"edge-a"}))
        assert isinstance(decision, Wait) and "1 of the 2" in decision.reason

    def test_later_rounds_follow_and_job_finishes(self) -> None:
        policy = RoundPolicy(3, NAMED)
        assert decide(policy, progress(completed_rounds=1)) == StartRound(2, "previous round completed")
        assert decide(policy, progress(completed_rounds=3)) == FinishJob()

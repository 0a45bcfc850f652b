"""FedAvg's round strategy: all edges or a quorum at the deadline, sample weights, stragglers discarded."""

from __future__ import annotations

from consumers.cloud.fedavg.policy import Aggregate, FedAvgPolicy, RoundView, Verdict, Wait, classify_round, decide

EDGES = frozenset({"edge-a", "edge-b", "edge-c"})


class TestDecide:
    """A round aggregates once every expected edge reported, or at the deadline with a quorum."""

    def test_waits_for_every_edge_without_deadline(self) -> None:
        decision = decide(FedAvgPolicy(2, EDGES), RoundView(1, {"edge-a": 4, "edge-b": 2}, elapsed_s=1e9))
        assert isinstance(decision, Wait) and "edge-c" in decision.reason

    def test_all_reported(self) -> None:
        decision = decide(FedAvgPolicy(2, EDGES), RoundView(1, {"edge-a": 4, "edge-b": 2, "edge-c": 2}, 0.0))
        assert isinstance(decision, Aggregate)
        assert decision.weights == {"edge-a": 0.5, "edge-b": 0.25, "edge-c": 0.25}
        assert decision.edges == ("edge-a", "edge-b", "edge-c")

    def test_quorum_at_deadline(self) -> None:
        policy = FedAvgPolicy(2, EDGES, min_edges=2, deadline_s=30.0)
        early = decide(policy, RoundView(1, {"edge-a": 1, "edge-b": 3}, elapsed_s=29.9))
        assert isinstance(early, Wait)
        late = decide(policy, RoundView(1, {"edge-a": 1, "edge-b": 3}, elapsed_s=30.0))
        assert isinstance(late, Aggregate) and late.weights == {"edge-a": 0.25, "edge-b": 0.75}
        assert "edge-c" in late.reason

    def test_below_quorum_keeps_waiting(self) -> None:
        decision = decide(FedAvgPolicy(2, EDGES, min_edges=2, deadline_s=1.0), RoundView(1, {"edge-a": 5}, 99.0))
        assert isinstance(decision, Wait) and "1 of the 2" in decision.reason

    def test_unexpected_and_empty_edges_do_not_count(self) -> None:
        policy = FedAvgPolicy(2, frozenset({"edge-a"}))
        assert isinstance(decide(policy, RoundView(1, {"rogue": 9, "edge-a": 0}, 0.0)), Wait)


class TestClassifyRound:
    """Updates for the open round count; for a closed round they are stragglers; others were never asked for."""

    def test_verdicts(self) -> None:
        assert classify_round(3, open_round=3, last_closed=2) is Verdict.ACCEPT
        assert classify_round(2, open_round=3, last_closed=2) is Verdict.STRAGGLER
        assert classify_round(1, open_round=None, last_closed=2) is Verdict.STRAGGLER  # after the job
        assert classify_round(3, open_round=None, last_closed=2) is Verdict.NOT_STARTED  # closed, next not open
        assert classify_round(4, open_round=3, last_closed=2) is Verdict.NOT_STARTED

"""FedAvg's round strategy, pure (no I/O, no clocks): which updates count, when to aggregate, with what weights.

A round aggregates as soon as every expected edge reported; or, once ``deadline_s`` has passed since
the round started, with whoever reported if they are at least ``min_edges``. An update for a round
that has closed is a straggler: acknowledged and discarded, never folded into a later round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from shared.training.fedavg import sample_weights


@dataclass(frozen=True)
class FedAvgPolicy:
    """The job's round settings: expected edges by name, quorum and per-round deadline (None: wait for all)."""

    rounds: int
    expected: frozenset[str]
    min_edges: int = 1
    deadline_s: float | None = None


@dataclass(frozen=True)
class RoundView:
    """What the cloud knows of the open round: ``reported`` edge -> samples of its stored update."""

    round: int
    reported: Mapping[str, int]
    elapsed_s: float


@dataclass(frozen=True)
class Aggregate:
    """Command: average the updates of ``weights``' edges (edge -> weight, summing to 1) now."""

    round: int
    weights: dict[str, float]
    reason: str

    @property
    def edges(self) -> tuple[str, ...]:
        return tuple(sorted(self.weights))


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet; ``reason`` says what is missing (logs, /healthz)."""

    reason: str


Decision = Aggregate | Wait


def decide(policy: FedAvgPolicy, view: RoundView) -> Decision:
    """Whether round ``view.round`` aggregates now, and over which edges."""
    reported = {edge: n for edge, n in view.reported.items() if edge in policy.expected and n > 0}
    missing = sorted(policy.expected - set(reported))
    if not missing:
        return Aggregate(view.round, sample_weights(reported), "every expected edge reported")
    deadline = policy.deadline_s
    if deadline is not None and view.elapsed_s >= deadline:
        if len(reported) >= policy.min_edges:
            reason = (
                f"deadline passed with {len(reported)} of {len(policy.expected)} edges; missing {', '.join(missing)}"
            )
            return Aggregate(view.round, sample_weights(reported), reason)
        return Wait(f"deadline passed; {len(reported)} of the {policy.min_edges} updates needed arrived")
    return Wait(f"{len(reported)} of {len(policy.expected)} updates; waiting for {', '.join(missing)}")


class Verdict(StrEnum):
    """What to do with an update, by its round."""

    ACCEPT = "accept"  # for the open round
    STRAGGLER = "straggler"  # for a round already closed: acknowledge, count, discard
    NOT_STARTED = "not-started"  # for a round the cloud never started: refuse


def classify_round(update_round: int, open_round: int | None, last_closed: int) -> Verdict:
    """The verdict on an update for ``update_round`` while ``open_round`` collects (None: none does)."""
    if open_round is not None and update_round == open_round:
        return Verdict.ACCEPT
    if update_round <= last_closed:
        return Verdict.STRAGGLER
    return Verdict.NOT_STARTED

"""When the next round starts: a pure policy over what the cloud has received (no I/O, no clocks).

Round 1 starts when every expected edge has announced ``edge.done`` and the store holds each of its
batches ``0..batches-1``; or, once ``start_deadline_s`` has passed, when at least ``min_edges`` edges
have sent training features. Later rounds follow one another until ``rounds`` are done.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from shared.config.cloud import ExpectedEdges


@dataclass(frozen=True)
class RoundPolicy:
    """The job's round settings."""

    rounds: int
    expected: ExpectedEdges
    min_edges: int = 1
    start_deadline_s: float | None = None


@dataclass(frozen=True)
class Progress:
    """What the cloud knows at one instant.

    ``announced``: edge -> batches it said it released; ``stored_seqs``: edge -> sequence numbers stored;
    ``train_edges``: edges with at least one stored training batch.
    """

    completed_rounds: int
    waited_s: float
    announced: Mapping[str, int] = field(default_factory=dict)
    stored_seqs: Mapping[str, Set[int]] = field(default_factory=dict)
    train_edges: Set[str] = frozenset()


@dataclass(frozen=True)
class StartRound:
    """Command: train round ``round`` now."""

    round: int
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do yet; ``reason`` says what is missing (for logs and /healthz)."""

    reason: str


@dataclass(frozen=True)
class FinishJob:
    """Every round is done."""


Decision = StartRound | Wait | FinishJob


def complete_edges(progress: Progress) -> set[str]:
    """Edges that announced ``edge.done`` and whose every announced batch is stored."""
    return {
        edge
        for edge, batches in progress.announced.items()
        if set(range(batches)) <= set(progress.stored_seqs.get(edge, ()))
    }


def decide(policy: RoundPolicy, progress: Progress) -> Decision:
    """The next step of the job."""
    done = progress.completed_rounds
    if done >= policy.rounds:
        return FinishJob()
    if done >= 1:
        return StartRound(done + 1, "previous round completed")
    expected = policy.expected
    complete = {edge for edge in complete_edges(progress) if expected.counts(edge)}
    contributing = {edge for edge in progress.train_edges if expected.counts(edge)}
    if len(complete) >= expected.count and contributing:
        return StartRound(1, f"all expected edges are complete: {', '.join(sorted(complete))}")
    deadline = policy.start_deadline_s
    if deadline is not None and progress.waited_s >= deadline:
        if len(contributing) >= policy.min_edges:
            return StartRound(1, f"start deadline passed with {len(contributing)} edge(s) sending training features")
        return Wait(f"start deadline passed; {len(contributing)} of the {policy.min_edges} edges needed sent features")
    return Wait(_missing(expected, progress, complete))


def _missing(expected: ExpectedEdges, progress: Progress, complete: set[str]) -> str:
    if len(complete) >= expected.count:
        return "expected edges are complete but sent no training features"
    pending = []
    for edge, batches in sorted(progress.announced.items()):
        if edge not in complete and expected.counts(edge):
            have = len(set(progress.stored_seqs.get(edge, ())) & set(range(batches)))
            pending.append(f"{edge} {have}/{batches} batches stored")
    silent = sorted((expected.names or frozenset()) - set(progress.announced))
    text = f"{len(complete)} of {expected.count} edges complete"
    if pending:
        text += "; " + "; ".join(pending)
    if silent:
        text += "; no edge.done yet from " + ", ".join(silent)
    return text

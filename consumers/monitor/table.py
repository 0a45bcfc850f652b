"""What ``mistnet monitor`` shows, as pure functions: events fold into per-job state, state renders to lines.

Events are the JSON dicts of shared/wire/events.py; unknown types and missing fields are tolerated
(readers ignore what they do not know), so a newer daemon never crashes an older monitor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

MB = 1e6


@dataclass
class RoundRow:
    """One ``round.completed``: losses, validation mAP, samples, bytes and speed of the round."""

    round: int
    losses: tuple[float, float, float] | None
    map50: float | None
    map50_95: float | None
    samples_total: int
    samples_per_edge: dict[str, int]
    bytes_received: int
    duration_s: float
    epochs: int

    @property
    def images_per_s(self) -> float | None:
        """Training throughput: images seen (samples x epochs) per second of the round."""
        if self.duration_s <= 0:
            return None
        return self.samples_total * max(self.epochs, 1) / self.duration_s


@dataclass
class EdgeRow:
    """Latest known state of one edge, from its own events and the rounds that used its features."""

    edge: str
    status: str = "seen"
    images_released: int | None = None
    batches: int | None = None
    bytes_sent: int | None = None
    samples_last_round: int | None = None
    last_event_at: float | None = None


@dataclass
class JobView:
    """Everything shown for one job."""

    job: str
    algorithm: str | None = None
    rounds_planned: int | None = None
    rounds: dict[int, RoundRow] = field(default_factory=dict)
    edges: dict[str, EdgeRow] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    completed: bool = False
    last_event_at: float | None = None

    def edge(self, name: str) -> EdgeRow:
        return self.edges.setdefault(name, EdgeRow(name))


@dataclass
class MonitorState:
    """Jobs seen so far, in order of first appearance."""

    jobs: dict[str, JobView] = field(default_factory=dict)
    events: int = 0

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the state."""
        job_name = event.get("job")
        if not isinstance(job_name, str):
            return
        self.events += 1
        job = self.jobs.setdefault(job_name, JobView(job_name))
        created = _number(event.get("created_at"))
        job.last_event_at = created if created is not None else job.last_event_at
        kind = event.get("type")
        if kind == "round.completed":
            _apply_round(job, event)
        elif kind == "job.completed":
            job.completed = True
            job.algorithm = event.get("algorithm", job.algorithm)
            job.rounds_planned = _int(event.get("rounds")) or job.rounds_planned
        elif kind in ("edge.done", "edge.status") and isinstance(event.get("edge"), str):
            _apply_edge(job.edge(event["edge"]), event, created)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def round_row(event: dict[str, Any]) -> RoundRow | None:
    """The table row of a ``round.completed`` event (None if it has no round number)."""
    number = _int(event.get("round"))
    if number is None:
        return None
    losses, val, per_edge = (_dict(event.get(k)) for k in ("losses", "val", "samples_per_edge"))
    box, obj, cls = (_number(losses.get(k)) for k in ("box", "obj", "cls"))
    return RoundRow(
        round=number,
        losses=(box, obj, cls) if box is not None and obj is not None and cls is not None else None,
        map50=_number(val.get("map50")),
        map50_95=_number(val.get("map50_95")),
        samples_total=_int(event.get("samples_total")) or 0,
        samples_per_edge={str(k): int(v) for k, v in per_edge.items() if _number(v) is not None},
        bytes_received=_int(event.get("bytes_received")) or 0,
        duration_s=_number(event.get("duration_s")) or 0.0,
        epochs=_int(event.get("epochs")) or 1,
    )


def _apply_round(job: JobView, event: dict[str, Any]) -> None:
    row = round_row(event)
    if row is None:
        return
    job.rounds[row.round] = row
    job.algorithm = event.get("algorithm", job.algorithm)
    job.rounds_planned = _int(event.get("rounds")) or job.rounds_planned
    if isinstance(event.get("privacy"), dict):
        job.privacy = event["privacy"]
    if row.round == max(job.rounds):
        for name, samples in row.samples_per_edge.items():
            job.edge(name).samples_last_round = samples


def _apply_edge(edge: EdgeRow, event: dict[str, Any], created: float | None) -> None:
    if event.get("type") == "edge.done":
        edge.status = "done"
    else:
        status = event.get("status", event.get("state"))
        edge.status = str(status) if status is not None else "active"
    for name in ("images_released", "batches", "bytes_sent"):
        value = _int(event.get(name))
        if value is not None:
            setattr(edge, name, value)
    edge.last_event_at = created if created is not None else edge.last_event_at


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def _clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts is not None else "-"


def privacy_text(privacy: dict[str, Any] | None) -> str:
    """``rr-sym ε=100 (ε_bit 50, ε_image 1.6e+07)``, or ``privacy unknown``."""
    if not privacy:
        return "privacy unknown"
    mechanism = str(privacy.get("mechanism", "?"))
    if privacy.get("epsilon") is None:
        return f"{mechanism} (no randomisation)"
    eps, bit, image = (_number(privacy.get(k)) for k in ("epsilon", "epsilon_bit", "epsilon_image"))
    return f"{mechanism} ε={_fmt(eps, 'g', 0)} (ε_bit {_fmt(bit, '.3g', 0)}, ε_image {_fmt(image, '.3g', 0)})"


ROUND_HEADER = (
    f"{'round':>5}  {'box':>7} {'obj':>7} {'cls':>7}  {'mAP50':>6} {'mAP50-95':>8}  "
    f"{'samples':>7}  {'MB in':>7} {'img/s':>7} {'time':>7}  per edge"
)
EDGE_HEADER = (
    f"  {'edge':<20} {'status':<10} {'images':>7} {'batches':>7} {'MB sent':>8} {'last round':>10}  last event"
)


def render_round(row: RoundRow) -> str:
    """One line of the rounds table."""
    box, obj, cls = row.losses if row.losses else (None, None, None)
    per_edge = " ".join(f"{name}:{count}" for name, count in sorted(row.samples_per_edge.items()))
    return (
        f"{row.round:>5}  {_fmt(box, '.4f', 7)} {_fmt(obj, '.4f', 7)} {_fmt(cls, '.4f', 7)}  "
        f"{_fmt(row.map50, '.3f', 6)} {_fmt(row.map50_95, '.3f', 8)}  {row.samples_total:>7}  "
        f"{row.bytes_received / MB:>7.1f} {_fmt(row.images_per_s, '.1f', 7)} {row.duration_s:>6.1f}s  {per_edge}"
    )


def render_edge(edge: EdgeRow) -> str:
    """One line of the edges table."""
    mb_sent = None if edge.bytes_sent is None else edge.bytes_sent / MB
    return (
        f"  {edge.edge:<20} {edge.status:<10} {_fmt(edge.images_released, 'd', 7)} {_fmt(edge.batches, 'd', 7)} "
        f"{_fmt(mb_sent, '.1f', 8)} {_fmt(edge.samples_last_round, 'd', 10)}  {_clock(edge.last_event_at)}"
    )


def render_job(job: JobView) -> list[str]:
    """Header, rounds table and edges table of one job."""
    latest = max(job.rounds) if job.rounds else 0
    planned = f"/{job.rounds_planned}" if job.rounds_planned else ""
    status = "completed" if job.completed else "running"
    lines = [
        f"job {job.job} · {job.algorithm or '?'} · round {latest}{planned} · {status} · {privacy_text(job.privacy)}",
        ROUND_HEADER,
    ]
    lines += [render_round(job.rounds[number]) for number in sorted(job.rounds)] or ["  (no round completed yet)"]
    if job.edges:
        lines += [EDGE_HEADER, *(render_edge(job.edges[name]) for name in sorted(job.edges))]
    return lines


def render_state(state: MonitorState, max_rounds: int | None = None) -> list[str]:
    """The whole screen: every job (each keeping its last ``max_rounds`` rounds), blank lines between."""
    if not state.jobs:
        return ["waiting for events…"]
    lines: list[str] = []
    for job in state.jobs.values():
        view = job
        if max_rounds is not None and len(job.rounds) > max_rounds:
            kept = sorted(job.rounds)[-max_rounds:]
            view = JobView(**{**vars(job), "rounds": {n: job.rounds[n] for n in kept}})
        lines += [*render_job(view), ""]
    return lines[:-1]


def render_event_line(event: dict[str, Any]) -> str:
    """One line per event for a log or a pipe (no terminal): what happened, to whom, the key numbers."""
    kind, job = event.get("type", "?"), event.get("job", "?")
    head = f"{_clock(_number(event.get('created_at')))} {job} {kind}"
    row = round_row(event) if kind == "round.completed" else None
    if row is not None:
        box, obj, cls = row.losses if row.losses else (None, None, None)
        return (
            f"{head} {row.round}/{event.get('rounds', '?')} loss box {_fmt(box, '.4f', 0)} obj "
            f"{_fmt(obj, '.4f', 0)} cls {_fmt(cls, '.4f', 0)} mAP50 {_fmt(row.map50, '.3f', 0)} "
            f"mAP50-95 {_fmt(row.map50_95, '.3f', 0)} samples {row.samples_total} "
            f"img/s {_fmt(row.images_per_s, '.1f', 0)} {privacy_text(event.get('privacy'))}"
        )
    if kind in ("edge.done", "edge.status"):
        status = "done" if kind == "edge.done" else event.get("status", event.get("state", "active"))
        return f"{head} {event.get('edge', '?')} {status} images {event.get('images_released', '-')}"
    if kind == "job.completed":
        final = _dict(event.get("final_val"))
        return (
            f"{head} after {event.get('rounds', '?')} rounds, final mAP50 {_fmt(_number(final.get('map50')), '.3f', 0)}"
        )
    return head

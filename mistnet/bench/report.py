"""Figures of the bench: a measured ratio against its bar, and their JSON and markdown forms."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Every figure ``mistnet bench`` reports, in report order (the CI smoke test checks they are all there).
FIGURE_KEYS = (
    "edge",
    "wire",
    "wire_vs_anchor",
    "transport",
    "cloud",
    "memory_edge",
    "memory_cloud",
    "scale_edges",
    "scale_images",
)


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``measured`` (in ``unit``) against ``bar`` (None: informational, no bar)."""

    key: str
    title: str
    measured: float
    unit: str
    bar: float | None
    direction: Literal["min", "max"]  # "min": measured must be at least the bar; "max": at most
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        if self.bar is None:
            return None
        return self.measured >= self.bar if self.direction == "min" else self.measured <= self.bar

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio_figure(
    key: str, title: str, ratios: Sequence[float], *, bar: float | None, direction: Literal["min", "max"],
    detail: str, **data: Any,
) -> Figure:  # fmt: skip
    """A figure whose measured value is the median of per-repetition ratios (each measured side by side)."""
    return Figure(key, title, round(median(ratios), 4), "x", bar, direction, detail, {"ratios": list(ratios), **data})


def _measured(figure: Figure) -> str:
    value = f"{figure.measured:.3g}" if figure.unit != "GiB" else f"{figure.measured:.2f}"
    return f"{value} {figure.unit}" if figure.unit != "x" else f"{value}x"


def _bar(figure: Figure) -> str:
    if figure.bar is None:
        return "-"
    sign = "≥" if figure.direction == "min" else "≤"
    return f"{sign} {figure.bar:g}" + (" GiB" if figure.unit == "GiB" else "x")


def markdown(figures: Sequence[Figure], header: dict[str, Any]) -> str:
    """The summary: how it was run, then a table figure | measured | bar | met? and one line per figure."""
    lines = [
        "# mistnet bench",
        "",
        f"`{header['command']}` on {header['date']}: {header['machine']}; "
        f"load average {header['load_before']} before, {header['load_after']} after.",
        "",
        "| figure | measured | bar | met? |",
        "|---|---|---|---|",
    ]
    for f in figures:
        met = {True: "yes", False: "**no**", None: "-"}[f.met]
        lines.append(f"| {f.title} | {_measured(f)} | {_bar(f)} | {met} |")
    lines += ["", "How each figure was measured:", ""]
    lines += [f"- **{f.title}**: {f.detail}" for f in figures]
    return "\n".join(lines) + "\n"

"""The job report: a per-round table (terminal and markdown) and a PNG plot of loss and mAP per round."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def round_rows(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per ``round.completed`` event, sorted by round."""
    rows = []
    for event in sorted(events, key=lambda e: int(e["round"])):
        losses = event.get("losses") or {}
        val = event.get("val") or {}
        public = event.get("public_val") or {}
        rows.append(
            {
                "round": event["round"],
                "samples": event.get("samples_total"),
                "loss_box": losses.get("box"),
                "loss_obj": losses.get("obj"),
                "loss_cls": losses.get("cls"),
                "val_map50": val.get("map50"),
                "val_map50_95": val.get("map50_95"),
                "public_map50": public.get("map50"),
                "public_map50_95": public.get("map50_95"),
                "duration_s": event.get("duration_s"),
                "mbytes_in": (event.get("bytes_received") or 0) / 1e6,
            }
        )
    return rows


def with_baseline(rows: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` preceded by round 0: the pretrained model's metrics before any training, when reported."""
    first = min(events, key=lambda e: int(e["round"]), default=None)
    if first is None or not (first.get("baseline_val") or first.get("baseline_public_val")):
        return list(rows)
    val, public = first.get("baseline_val") or {}, first.get("baseline_public_val") or {}
    zero = dict.fromkeys(rows[0], None) if rows else {}
    zero.update(
        round=0,
        val_map50=val.get("map50"),
        val_map50_95=val.get("map50_95"),
        public_map50=public.get("map50"),
        public_map50_95=public.get("map50_95"),
    )
    return [zero, *rows]


_COLUMNS = [
    ("round", "round"),
    ("samples", "samples"),
    ("loss_box", "box"),
    ("loss_obj", "obj"),
    ("loss_cls", "cls"),
    ("val_map50", "val mAP50"),
    ("val_map50_95", "val mAP50-95"),
    ("public_map50", "public mAP50"),
    ("public_map50_95", "public mAP50-95"),
    ("duration_s", "seconds"),
    ("mbytes_in", "MB in"),
]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title in _COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in _COLUMNS) + "|"
    body = [
        "| " + " | ".join(_fmt(row[key], 1 if key in ("duration_s", "mbytes_in") else 3) for key, _ in _COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join([head, rule, *body])


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width table for a terminal."""
    titles = [title for _, title in _COLUMNS]
    cells = [[_fmt(row[key], 1 if key in ("duration_s", "mbytes_in") else 3) for key, _ in _COLUMNS] for row in rows]
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t) for i, t in enumerate(titles)]
    lines = ["  ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(lines)


def plot_rounds(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Two panels: loss components, and mAP (private and public val) per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in rows]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss_box", "box"), ("loss_obj", "obj"), ("loss_cls", "cls")):
        ax_loss.plot(rounds, [float("nan") if r[key] is None else r[key] for r in rows], marker="o", label=label)
    ax_loss.set(xlabel="round", ylabel="training loss", title="loss per round")
    ax_loss.legend()
    for key, label in (
        ("val_map50", "private val mAP@0.5"),
        ("val_map50_95", "private val mAP@0.5:0.95"),
        ("public_map50", "public val mAP@0.5"),
        ("public_map50_95", "public val mAP@0.5:0.95"),
    ):
        values = [r[key] for r in rows]
        if any(v is not None for v in values):
            ax_map.plot(rounds, [float("nan") if v is None else v for v in values], marker="o", label=label)
    ax_map.set(
        xlabel="round (0 = pretrained, bits only, before training)", ylabel="mAP", title="validation mAP per round"
    )
    ax_map.legend()
    for axis in (ax_loss, ax_map):
        axis.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

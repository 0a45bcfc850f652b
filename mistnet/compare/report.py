"""The comparison report: markdown tables and PNG plots from the arms' results (pure apart from writing)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mistnet.compare.arms import ArmResult


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mb(value: float) -> str:
    return f"{value / 1e6:.2f}"


def headline(results: Sequence[ArmResult]) -> str:
    """One row per arm: final held-out mAP, traffic and compute per edge, peak memory, privacy."""
    lines = [
        "| arm | final mAP@0.5 | final mAP@0.5:0.95 | MB up / edge | MB down / edge | edge CPU s / edge | "
        "edge GFLOPs / edge | edge peak RSS MiB | wall s | ε_bit | per-image bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        last = r.rounds[-1]
        edges = sorted({e for row in r.rounds for e in row.up_bytes})
        per = max(len(edges), 1)
        up = sum(sum(row.up_bytes.values()) for row in r.rounds) / per
        down = sum(sum(row.down_bytes.values()) for row in r.rounds) / per
        secs = sum(sum(row.edge_seconds.values()) for row in r.rounds) / per
        flops = sum(sum(row.edge_flops.values()) for row in r.rounds) / per
        rss = max(r.edge_peak_rss.values(), default=0) / 2**20
        lines.append(
            f"| {r.arm.name} | {_f(last.map50)} | {_f(last.map50_95)} | {_mb(up)} | {_mb(down)} | {secs:.1f} | "
            f"{flops / 1e9:.1f} | {rss:.0f} | {r.wall_seconds:.0f} | {_f(r.privacy.get('epsilon_bit'), 2)} | "
            f"{_f(r.privacy.get('epsilon_image'), 0)} |"
        )
    return "\n".join(lines)


def per_round(results: Sequence[ArmResult]) -> str:
    """Held-out mAP@0.5 (mAP@0.5:0.95) per round and arm, with round wall seconds."""
    rounds = sorted({row.round for r in results for row in r.rounds})
    head = "| round | " + " | ".join(r.arm.name for r in results) + " |"
    rule = "|---|" + "---|" * len(results)
    body = []
    for n in rounds:
        cells = []
        for r in results:
            row = next((x for x in r.rounds if x.round == n), None)
            cells.append("-" if row is None else f"{_f(row.map50)} ({_f(row.map50_95)}), {_f(row.seconds, 0)} s")
        body.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *body])


def traffic(results: Sequence[ArmResult]) -> str:
    """Bytes up and down per edge per round, and edge compute per round."""
    lines = ["| arm | round | edge | MB up | MB down | edge seconds | GFLOPs |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r.rounds:
            for edge in sorted(row.up_bytes):
                lines.append(
                    f"| {r.arm.name} | {row.round} | {edge} | {_mb(row.up_bytes[edge])} | "
                    f"{_mb(row.down_bytes.get(edge, 0))} | {row.edge_seconds.get(edge, 0.0):.1f} | "
                    f"{row.edge_flops.get(edge, 0.0) / 1e9:.1f} |"
                )
    return "\n".join(lines)


def plot(results: Sequence[ArmResult], path: Path) -> Path:
    """Held-out mAP@0.5 per round for every arm, and cumulative MB up+down per edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_map, ax_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        rows = [row for row in r.rounds if row.map50 is not None]
        ax_map.plot([row.round for row in rows], [row.map50 for row in rows], marker="o", label=r.arm.name)
        edges = max(len({e for row in r.rounds for e in row.up_bytes}), 1)
        total, xs, ys = 0.0, [], []
        for row in r.rounds:
            total += (sum(row.up_bytes.values()) + sum(row.down_bytes.values())) / edges
            xs.append(row.round)
            ys.append(total / 1e6)
        ax_bytes.plot(xs, ys, marker="o", label=r.arm.name)
    ax_map.set(xlabel="round (0 = pretrained, before training)", ylabel="held-out mAP@0.5", title="accuracy")
    ax_bytes.set(xlabel="round", ylabel="MB per edge (up + down, cumulative)", title="traffic", yscale="log")
    for axis in (ax_map, ax_bytes):
        axis.legend(fontsize=8)
        axis.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render(
    results: Sequence[ArmResult], setup: dict[str, Any], command: str, plot_name: str, audit_md: str | None
) -> str:
    """The whole markdown report."""
    lines = [
        "# MistNet vs FedAvg vs centralised fine-tuning",
        "",
        f"Command: `{command}`",
        "",
        f"Setup: {setup['description']}",
        "",
        "## Headline",
        "",
        headline(results),
        "",
        f"![held-out mAP and traffic per round]({plot_name})",
        "",
        "## Held-out accuracy per round",
        "",
        "mAP@0.5 (mAP@0.5:0.95) on the held-out images no edge trains on, through each arm's deployed pipeline "
        "(MistNet: edge part, bits, cloud part; FedAvg and centralised: the full model), and the round's wall "
        "time. Round 0 is the pretrained model before training.",
        "",
        per_round(results),
        "",
        "## Traffic and edge compute per round",
        "",
        traffic(results),
        "",
        "## Privacy",
        "",
    ]
    for r in results:
        p = r.privacy
        note = f" {p['note']}" if p.get("note") else ""
        lines.append(
            f"- **{r.arm.name}**: mechanism `{p.get('mechanism')}`, ε = {p.get('epsilon')}, ε_bit = "
            f"{p.get('epsilon_bit')}, per-image bound = {p.get('epsilon_image')}.{note}"
        )
    lines += ["", "## Notes", ""]
    for r in results:
        lines += [f"- {r.arm.name}: {n}" for n in r.notes]
    lines += [f"- {n}" for n in setup.get("notes", [])]
    if audit_md:
        lines += ["", "## Privacy audit (feature inversion)", "", audit_md]
    return "\n".join(lines) + "\n"

"""The demo's final report: markdown with the privacy statement, per-round table, plot and a detection."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mistnet.demo.report import markdown_table, plot_rounds, round_rows, with_baseline
from shared.dataset.sources import Sample

if TYPE_CHECKING:
    from mistnet.demo.runner import DemoConfig


def _metric(block: dict[str, Any] | None, key: str) -> str:
    return "-" if not block or block.get(key) is None else f"{block[key]:.3f}"


def _detection(model_dir: Path, held_out: Sequence[Sample], out: Path) -> tuple[Path, int, float] | None:
    """Draw the final model's detections on the held-out image where it finds the most objects."""
    import cv2

    from shared.dataset.letterbox import read_image
    from shared.evaluation.detect import detect_image
    from shared.evaluation.draw import draw_detections
    from shared.evaluation.evaluate import build_predictor
    from shared.yolo.artifact import load_model

    if not held_out or not model_dir.exists():
        return None
    loaded = load_model(model_dir)
    manifest = loaded.manifest
    predict = build_predictor(loaded.build(), manifest.cut_layer, manifest.encoding)
    for conf in (0.25, 0.1):
        scored = []
        for sample in held_out:
            image = read_image(sample.image)
            scored.append((detect_image(predict, image, manifest.img_size, manifest.names, conf_thres=conf), image))
        found, image = max(scored, key=lambda pair: len(pair[0]))
        if found:
            break
    cv2.imwrite(str(out), draw_detections(image, found))
    return out, len(found), conf


def write_report(
    cfg: DemoConfig, events: list[dict[str, Any]], model_dir: Path, held_out: Sequence[Sample], out_dir: Path
) -> Path:
    """Write report.md, rounds.png and detection.png into ``out_dir``; returns the markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds = [e for e in events if e.get("type") == "round.completed"]
    edges = [e for e in events if e.get("type") == "edge.done"]
    rows = round_rows(rounds)
    plot = plot_rounds(
        with_baseline(rows, rounds), out_dir / "rounds.png", f"mistnet demo {cfg.job}: {cfg.privacy} ε={cfg.epsilon}"
    )
    first, last = (rounds[0], rounds[-1]) if rounds else ({}, {})
    privacy = last.get("privacy") or {}
    model = last.get("model") or {}
    detection = _detection(model_dir, held_out, out_dir / "detection.png")
    lines = [
        f"# mistnet demo report: job `{cfg.job}`",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. COCO128 split between two edges and "
        f"{cfg.held_out} held-out images; yolov5n, {cfg.img_size} px, cut layer {cfg.cut_layer}, "
        f"{cfg.rounds} rounds x {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.learning_rate}.",
        "",
        "## Privacy",
        "",
        f"- Mechanism `{privacy.get('mechanism', cfg.privacy)}`, configured ε = {privacy.get('epsilon')}.",
        f"- Per-bit guarantee ε_bit = {privacy.get('epsilon_bit')}; per-image bound r·ε_bit = "
        f"{privacy.get('epsilon_image')} (every one of an image's released bits can change with the image).",
        "- Labels and boxes travel in clear; image identifiers on the wire are opaque.",
        "",
        "## Edges",
        "",
        "| edge | images | train | private val | batches | MB sent |",
        "|---|---|---|---|---|---|",
        *[
            f"| {e['edge']} | {e['images_released']} | {e['train_images']} | {e['val_images']} | {e['batches']} | "
            f"{e['bytes_sent'] / 1e6:.2f} |"
            for e in edges
        ],
        "",
        "## Rounds",
        "",
        markdown_table(rows),
        "",
        f"![loss and mAP per round]({plot.name})",
        "",
        "## Before and after training",
        "",
        "| set | bits-only pretrained (no training) mAP@0.5 | final mAP@0.5 | final mAP@0.5:0.95 |",
        "|---|---|---|---|",
        f"| edges' private val | {_metric(first.get('baseline_val'), 'map50')} | {_metric(last.get('val'), 'map50')} | "
        f"{_metric(last.get('val'), 'map50_95')} |",
        f"| held-out (public val, deployed pipeline) | {_metric(first.get('baseline_public_val'), 'map50')} | "
        f"{_metric(last.get('public_val'), 'map50')} | {_metric(last.get('public_val'), 'map50_95')} |",
        "",
        f"Final model: `{model.get('uri', '-')}` (sha256 `{model.get('sha256', '-')}`), local copy `{model_dir}`.",
    ]
    if detection is not None:
        lines += [
            "",
            "## A detection on a held-out image",
            "",
            f"{detection[1]} boxes (conf ≥ 0.25):",
            "",
            f"![detections]({detection[0].name})",
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

"""``mistnet compare``: the same COCO128 partitions trained centrally, with MistNet and with FedAvg.

MistNet and FedAvg arms run through the real system (two edge daemons and the cloud as processes, real
RabbitMQ and S3), each in a fresh vhost; the centralised upper bound trains in this process. Every arm
trains rounds × epochs over the same training images and is evaluated after each round on held-out
images no edge trains on. ``--privacy`` adds the feature-inversion audit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from mistnet.compare.arms import Arm, ArmResult, RoundRow, fedavg_rows, mistnet_rows, parse_arms
from mistnet.compare.centralized import held_out_metrics, run_centralized
from mistnet.compare.report import plot, render
from mistnet.demo.assets import AssetError, Assets, resolve_assets
from mistnet.demo.partition import partition
from mistnet.demo.runner import EDGES, DemoConfig, run_demo
from mistnet.demo.services import ServiceError
from shared.dataset.sources import discover
from shared.observability.logs import configure_logging

DEFAULT_ARMS = "centralized,mistnet:none,mistnet:rr-sym:8,mistnet:rr-sym:4,fedavg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assets", type=Path, default=None, help="folder with coco128/ and weights/yolov5n.pt")
    parser.add_argument("--out", type=Path, default=Path("reports/compare"), help="report folder")
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated (default {DEFAULT_ARMS})")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per round (every arm)")
    parser.add_argument("--img-size", type=int, default=320, help="reduced size by default; see --full-size")
    parser.add_argument("--full-size", action="store_true", help="640 px (slow on a CPU)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--images", type=int, default=None, help="use only the first N COCO128 images (tests)")
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="edges' private val share (not trained)")
    parser.add_argument("--privacy", action="store_true", help="also run the feature-inversion audit")
    parser.add_argument("--audit-settings", default="none,rr-sym:8,rr-sym:4,rr-sym:1")
    parser.add_argument("--audit-epochs", type=int, default=30)
    parser.add_argument("--audit-img-size", type=int, default=160)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/", help="administrator URL")
    parser.add_argument("--management-url", default="http://127.0.0.1:15672")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def _say(text: str) -> None:
    print(f"[compare] {text}", file=sys.stderr, flush=True)  # noqa: T201


def _extractor_flops(weights: Path, cut_layer: int, img_size: int) -> float:
    from shared.training.flops import FLOPS_PER_MAC, conv_macs_per_image
    from shared.yolo.artifact import load_model
    from shared.yolo.network import split_model

    edge, _ = split_model(load_model(weights, img_size).build(), cut_layer)
    return float(FLOPS_PER_MAC * conv_macs_per_image(edge, img_size))


def _job_arm(
    arm: Arm, args: argparse.Namespace, assets: Assets, *, img_size: int, workdir: Path, baseline: tuple[float, float]
) -> ArmResult:
    stamp = time.strftime("%H%M%S")
    config = DemoConfig(
        workdir=workdir,
        job=f"cmp-{arm.slug.replace('.', '_')}-{stamp}",
        assets=assets,
        rounds=args.rounds,
        epochs=args.epochs,
        img_size=img_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        images=args.images,
        held_out=args.held_out,
        val_fraction=args.val_fraction,
        privacy=arm.mechanism if arm.kind == "mistnet" else "none",
        epsilon=arm.epsilon or 100.0,
        cut_layer=4,
        blob_store="s3",
        admin_amqp_url=args.amqp_url,
        management_url=args.management_url,
        s3_port=8333,
        algorithm=arm.kind,
        report=False,
    )
    started = time.monotonic()
    summary = asyncio.run(run_demo(config))
    events: list[dict[str, Any]] = summary["events"]
    usage: dict[str, dict[str, float]] = summary["usage"]
    rounds = [e for e in events if e.get("type") == "round.completed"]
    privacy = dict(rounds[-1].get("privacy") or {}) if rounds else {}
    rss = {e: int(usage[e]["peak_rss_bytes"]) for e in EDGES if e in usage}
    if arm.kind == "mistnet":
        cpu = {e: float(usage[e]["cpu_seconds"]) for e in EDGES if e in usage}
        rows = mistnet_rows(events, cpu, _extractor_flops(assets.weights, 4, img_size))
        notes = [
            "edge seconds = CPU seconds of the whole edge process (decode, extract, randomise, publish); "
            "edges download nothing (deploying the final model to them would add one model download)"
        ]
    else:
        rows = fedavg_rows(events)
        rows.insert(0, RoundRow(0, baseline[0], baseline[1], None))
        notes = [
            "edge seconds = local training time reported by each edge; updates are fp16 deltas, the global "
            "model goes down as fp32"
        ]
    return ArmResult(arm, rows, privacy, rss, time.monotonic() - started, notes)


def run(args: argparse.Namespace) -> int:
    configure_logging("warning")
    try:
        arms = parse_arms(args.arms)
        assets = resolve_assets(args.assets, Path.home() / ".cache" / "mistnet")
    except (ValueError, AssetError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    img_size = 640 if args.full_size else args.img_size
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = "mistnet compare " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["compare"] else sys.argv[1:])
    parts = partition(discover(assets.coco128)[: args.images], EDGES, args.held_out, seed=0)
    baseline = held_out_metrics(assets.weights, parts.held_out, img_size, args.batch_size)
    results: list[ArmResult] = []
    for arm in arms:
        _say(f"arm {arm.name}: {args.rounds} rounds x {args.epochs} epochs at {img_size} px")
        try:
            if arm.kind == "centralized":
                result = run_centralized(
                    assets.weights,
                    parts.edges,
                    parts.held_out,
                    rounds=args.rounds,
                    epochs=args.epochs,
                    img_size=img_size,
                    batch_size=args.batch_size,
                    learning_rate=args.learning_rate,
                    val_fraction=args.val_fraction,
                )
            else:
                result = _job_arm(
                    arm, args, assets, img_size=img_size, workdir=out / "runs" / arm.slug, baseline=baseline
                )
        except (ServiceError, RuntimeError) as exc:
            print(f"error: arm {arm.name} failed: {exc}", file=sys.stderr)  # noqa: T201
            return 1
        results.append(result)
        _say(f"arm {arm.name} done in {result.wall_seconds:.0f} s: final mAP@0.5 {result.rounds[-1].map50}")
        (out / "results.json").write_text(json.dumps([r.to_dict() for r in results], indent=2))
    audit_md = _audit(args, assets, out) if args.privacy else None
    setup = {
        "description": (
            f"COCO128 with yolov5n (COCO-pretrained), {img_size} px, cut layer 4; two edges with disjoint "
            f"partitions ({', '.join(f'{e}: {len(s)} images' for e, s in parts.edges.items())}), each keeping "
            f"{args.val_fraction:.0%} of its images (by content digest) out of training; {len(parts.held_out)} "
            f"held-out images no edge trains on. Every arm: {args.rounds} rounds x {args.epochs} epochs, batch "
            f"{args.batch_size}, SGD lr {args.learning_rate}. Measured on this machine, "
            f"{time.strftime('%Y-%m-%d')}."
        ),
        "notes": [
            "Centralised and FedAvg restart SGD momentum every round; MistNet's cloud keeps its optimizer "
            "state across rounds."
        ],
    }
    chart = plot(results, out / "compare.png")
    (out / "README.md").write_text(render(results, setup, command, chart.name, audit_md))
    _say(f"report: {out / 'README.md'}")
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))  # noqa: T201
    return 0


def _audit(args: argparse.Namespace, assets: Assets, out: Path) -> str:
    from mistnet.audit.decoder import TrainRecipe
    from mistnet.audit.release import parse_settings
    from mistnet.audit.report import render_markdown
    from mistnet.audit.runner import AuditConfig, run_audit

    _say("privacy audit (feature inversion)")
    report = run_audit(
        AuditConfig(
            weights=assets.weights,
            data=assets.coco128,
            img_size=args.audit_img_size,
            settings=tuple(parse_settings(args.audit_settings)),
            recipe=TrainRecipe(epochs=args.audit_epochs),
            out=out / "audit",
        )
    )
    (out / "audit" / "audit.json").write_text(json.dumps(report.to_dict(), indent=2))
    return (
        render_markdown(report).replace("](", "](audit/")
        if "](" in render_markdown(report)
        else render_markdown(report)
    )

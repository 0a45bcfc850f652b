"""``mistnet audit`` (or ``mistnet compare --privacy``): the feature-inversion privacy audit from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPORT_JSON = "audit.json"
REPORT_MD = "audit.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, type=Path, help="official .pt, our .safetensors, or an artifact")
    parser.add_argument("--data", required=True, type=Path, help="YOLO folder or txt index; split attacker/victim")
    parser.add_argument("--img-size", type=int, default=128, help="square input size, a multiple of 32")
    parser.add_argument("--cut-layer", type=int, default=4, help="edge runs rows [0, cut); valid for v6.x: 1..4")
    parser.add_argument(
        "--settings",
        default="none,rr-sym:8,rr-sym:4",
        help="comma list of MECHANISM[:EPSILON]; none = bits only (ε=∞)",
    )
    parser.add_argument(
        "--float-ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also attack the un-binarised float features (never released: a reference ceiling)",
    )
    parser.add_argument("--epochs", type=int, default=20, help="passes over the attacker's images per setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-decayed to 0")
    parser.add_argument("--loss", choices=["mse", "l1", "mse+ssim"], default="mse", help="the attacker's objective")
    parser.add_argument("--decoder-width", type=int, default=128, help="channels of the decoder's first block")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 is faster on a busy machine)"
    )
    parser.add_argument("--attacker-fraction", type=float, default=0.75, help="share of images the attacker owns")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images of --data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=6, help="victim rows in the reconstruction grid")
    parser.add_argument("--out", type=Path, default=Path("audit"), help="folder for the grid PNG, JSON and markdown")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.add_argument("--log-level", default="info")


def run(args: argparse.Namespace) -> int:
    from mistnet.audit.decoder import TrainRecipe
    from mistnet.audit.release import parse_settings
    from mistnet.audit.report import render_markdown
    from mistnet.audit.runner import AuditConfig, run_audit
    from shared.dataset.sources import DatasetError
    from shared.observability.logs import configure_logging
    from shared.yolo.official import CheckpointError

    configure_logging(args.log_level)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        config = AuditConfig(
            weights=args.weights,
            data=args.data,
            img_size=args.img_size,
            cut_layer=args.cut_layer,
            settings=tuple(parse_settings(args.settings)),
            float_ceiling=args.float_ceiling,
            attacker_fraction=args.attacker_fraction,
            limit=args.limit,
            recipe=TrainRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss),
            decoder_width=args.decoder_width,
            seed=args.seed,
            out=args.out,
            examples=args.examples,
        )
        report = run_audit(config)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    document = report.to_dict()
    # The effective options, defaults included, so that the report says how to reproduce it.
    document["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in sorted(vars(args).items())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / REPORT_JSON).write_text(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")
    (args.out / REPORT_MD).write_text(f"# Privacy audit\n\n{render_markdown(report)}")
    if args.json:
        print(json.dumps(document, allow_nan=False, default=str))  # noqa: T201
    else:
        print(render_markdown(report), end="")  # noqa: T201
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mistnet.audit.main …`` until the ``mistnet`` CLI registers the subcommand."""
    parser = argparse.ArgumentParser(prog="mistnet audit", description="feature-inversion privacy audit")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""``mistnet demo``: the whole job on one machine, from services to a report, in a few minutes.

Brings up RabbitMQ (running or started) and S3 (SeaweedFS on loopback with generated credentials, or a
file:// blob store), provisions a fresh vhost with one broker user per edge, splits COCO128 into two
edge partitions and a held-out set, runs two edge daemons and the cloud as separate processes, follows
the job on the events exchange, and writes a report (markdown, PNG plot, an annotated detection).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from mistnet.demo.assets import AssetError, resolve_assets
from mistnet.demo.runner import DemoConfig, run_demo
from mistnet.demo.services import ServiceError
from shared.observability.logs import configure_logging

log = logging.getLogger("mistnet.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--assets",
        type=Path,
        default=None,
        help="folder with coco128/ and weights/yolov5n.pt (default: download with sha256 checks)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where state, logs and the report go (default: runs/demo-<time>)"
    )
    parser.add_argument("--job", default=None, help="job name (default: demo-<time>)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per round")
    parser.add_argument("--img-size", type=int, default=320, help="square input size (640 = full size, slower)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--images", type=int, default=None, help="use only the first N COCO128 images (default: all)")
    parser.add_argument("--held-out", type=int, default=32, help="COCO128 images no edge gets (cloud's public val)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share each edge releases as private val")
    parser.add_argument("--privacy", default="rr-sym", choices=["rr-sym", "rr-opt", "none"])
    parser.add_argument("--epsilon", type=float, default=100.0, help="ε of the mechanism (seed job default: 100)")
    parser.add_argument("--cut-layer", type=int, default=4)
    parser.add_argument("--blob-store", default="s3", help="'s3' (SeaweedFS, started if needed) or file:///DIR")
    parser.add_argument(
        "--amqp-url",
        default="amqp://guest:guest@127.0.0.1:5672/",
        help="broker URL of an administrator (env MISTNET_ADMIN_AMQP_URL)",
    )
    parser.add_argument("--management-url", default="http://127.0.0.1:15672")
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")


def run(args: argparse.Namespace) -> int:
    configure_logging("warning")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = (args.workdir or Path("runs") / f"demo-{stamp}").resolve()
    try:
        assets = resolve_assets(args.assets, Path.home() / ".cache" / "mistnet")
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    config = DemoConfig(
        workdir=workdir,
        job=args.job or f"demo-{stamp}",
        assets=assets,
        rounds=args.rounds,
        epochs=args.epochs,
        img_size=args.img_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        images=args.images,
        held_out=args.held_out,
        val_fraction=args.val_fraction,
        privacy=args.privacy,
        epsilon=args.epsilon,
        cut_layer=args.cut_layer,
        blob_store=args.blob_store,
        admin_amqp_url=args.amqp_url,
        management_url=args.management_url,
        s3_port=args.s3_port,
    )
    try:
        summary = asyncio.run(run_demo(config))
    except (ServiceError, RuntimeError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if args.json:
        print(json.dumps(summary))  # noqa: T201
    return 0

"""``mistnet eval``: mAP of a model on a labelled folder, through the full model or the split pipeline."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="official .pt, our .safetensors, or a model artifact folder")
    parser.add_argument("--data", required=True, type=Path, help="YOLO folder (images/ + labels/) or a txt index")
    parser.add_argument("--img-size", type=int, default=None, help="input size (default: the artifact's, else 640)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cut-layer", type=int, default=None, help="evaluate edge [0,cut) -> cloud [cut,end]")
    parser.add_argument(
        "--encoding",
        choices=["none", "bits"],
        default=None,
        help="what crosses the cut: float features (none) or x > 0 (bits); default: the artifact's",
    )
    parser.add_argument(
        "--rect",
        action="store_true",
        help="rectangular batches as YOLOv5's val.py (default: square letterbox, as deployed)",
    )
    parser.add_argument("--conf-thres", type=float, default=0.001)
    parser.add_argument("--iou-thres", type=float, default=0.6)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="image decoding threads")
    parser.add_argument("--skip-bad", action="store_true", help="log and skip unreadable images / bad labels")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared.dataset.loader import iter_batches
    from shared.dataset.sources import DatasetError, discover
    from shared.evaluation.evaluate import NmsSettings, build_predictor, evaluate_batches
    from shared.yolo.artifact import load_model
    from shared.yolo.official import CheckpointError

    try:
        loaded = load_model(args.weights, img_size=args.img_size or 640)
        samples = discover(args.data)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    manifest = loaded.manifest
    img_size = args.img_size or manifest.img_size
    cut = args.cut_layer if args.cut_layer is not None else manifest.cut_layer
    encoding = args.encoding or (manifest.encoding if cut is not None else "none")
    try:
        predictor = build_predictor(loaded.build(), cut, encoding)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    started = time.perf_counter()
    with tqdm(total=len(samples), desc="eval", unit="img", file=sys.stderr, disable=None) as bar:
        batches = iter_batches(
            samples,
            img_size,
            args.batch_size,
            rect=args.rect,
            on_error="skip" if args.skip_bad else "raise",
            workers=args.workers,
            num_classes=manifest.nc,
        )
        try:
            metrics = evaluate_batches(
                predictor, batches, NmsSettings(args.conf_thres, args.iou_thres, args.max_det), progress=bar.update
            )
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)  # noqa: T201
            return 2
    result = {
        **metrics.to_dict(),
        "weights": str(args.weights),
        "arch": manifest.arch,
        "img_size": img_size,
        "cut_layer": cut,
        "encoding": encoding,
        "letterbox": "rect" if args.rect else "square",
        "seconds": round(time.perf_counter() - started, 2),
    }
    if args.json:
        print(json.dumps(result))  # noqa: T201
    else:
        print(  # noqa: T201
            f"{result['images']} images, {result['instances']} instances: P {result['precision']:.3f} "
            f"R {result['recall']:.3f} mAP@0.5 {result['map50']:.3f} mAP@0.5:0.95 {result['map50_95']:.3f}"
        )
    return 0

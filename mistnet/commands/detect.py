"""``mistnet detect``: run the deployed pipeline of a model on one image and draw labelled boxes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="image to detect objects in")
    parser.add_argument(
        "--model", "--weights", dest="model", required=True, help="model artifact folder, .safetensors or official .pt"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the annotated image (e.g. out.jpg)")
    parser.add_argument("--img-size", type=int, default=None, help="input size (default: the artifact's, else 640)")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold (detect.py: 0.25)")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (detect.py: 0.45)")
    parser.add_argument("--max-det", type=int, default=1000)
    parser.add_argument("--cut-layer", type=int, default=None, help="override the artifact's cut layer")
    parser.add_argument(
        "--encoding", choices=["none", "bits"], default=None, help="override what crosses the cut (default: artifact's)"
    )
    parser.add_argument("--json", action="store_true", help="print the boxes (original-image pixels) as JSON")


def run(args: argparse.Namespace) -> int:
    import cv2

    from shared.dataset.letterbox import read_image
    from shared.dataset.sources import DatasetError
    from shared.evaluation.detect import detect_image
    from shared.evaluation.draw import draw_detections
    from shared.evaluation.evaluate import build_predictor
    from shared.yolo.artifact import load_model
    from shared.yolo.official import CheckpointError

    if args.img_size is not None and (args.img_size < 32 or args.img_size % 32):
        print(f"error: --img-size {args.img_size} must be a multiple of 32 (the model's stride)", file=sys.stderr)  # noqa: T201
        return 2
    try:
        loaded = load_model(args.model, img_size=args.img_size or 640)
        image = read_image(args.image)
        manifest = loaded.manifest
        cut = args.cut_layer if args.cut_layer is not None else manifest.cut_layer
        encoding = args.encoding or (manifest.encoding if cut is not None else "none")
        predict = build_predictor(loaded.build(), cut, encoding)
    except (CheckpointError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    img_size = args.img_size or manifest.img_size
    detections = detect_image(
        predict, image, img_size, manifest.names, conf_thres=args.conf, iou_thres=args.iou, max_det=args.max_det
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), draw_detections(image, detections)):
        print(f"error: cannot write {args.out}; use a .jpg or .png name in a writable folder", file=sys.stderr)  # noqa: T201
        return 2
    if args.json:
        result = {
            "image": str(args.image),
            "out": str(args.out),
            "model": str(args.model),
            "img_size": img_size,
            "cut_layer": cut,
            "encoding": encoding,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "boxes": [d.to_dict() for d in detections],
        }
        print(json.dumps(result))  # noqa: T201
    else:
        counts: dict[str, int] = {}
        for d in detections:
            counts[d.name] = counts.get(d.name, 0) + 1
        found = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "nothing"
        print(f"{args.image}: {found} -> {args.out}")  # noqa: T201
    return 0

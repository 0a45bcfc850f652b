"""``mistnet bench``: every bar of DESIGN §9 measured on this machine, each as a ratio taken side by side.

It provisions a fresh vhost, users and bucket on the given RabbitMQ and S3, runs the figures in
order (edge, wire, transport, cloud, scale, memory) and removes what it made. ``--quick`` uses
small sizes and few repetitions (a CI smoke test); ``--json`` prints the figures as JSON on stdout;
``--out`` writes the markdown summary. The exit status is 0 when every figure was measured, whether
or not it met its bar (the table says), and 1 when a measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mistnet.bench.cloud import CloudSize, bench_cloud
from mistnet.bench.edge import EdgeSize, bench_edge, declare_inbox
from mistnet.bench.env import BenchEnv, Services, bench_env
from mistnet.bench.memory import MemorySize, bench_memory
from mistnet.bench.processes import Daemon, DaemonError, start_cloud, store_count
from mistnet.bench.report import FIGURE_KEYS, Figure, markdown
from mistnet.bench.scale import Feeder, ScaleSize, edges_series, images_series
from mistnet.bench.transport import TransportSize, bench_transport
from mistnet.bench.wire import bench_wire
from producers.edge.extract import cpu_cores
from shared.wire.features import ModelSpec
from shared.yolo.artifact import extractor_sha256, load_model
from shared.yolo.table import build_arch, feature_shape

GROUPS = ("edge", "wire", "transport", "cloud", "scale", "memory")
#: Features of the synthetic batches (yolov5n cut 4 at 640: 64x80x80 bits, 1.6 MB a batch of 32).
SYNTHETIC_IMG = 640


@dataclass(frozen=True)
class Sizes:
    edge: EdgeSize
    wire_img: int
    wire_batch: int
    transport: TransportSize
    cloud: CloudSize
    cloud_batch: int
    memory: MemorySize
    scale: ScaleSize


FULL = Sizes(
    edge=EdgeSize(img_size=640, images=128, repeats=3, sweep_images=32),
    wire_img=640,
    wire_batch=32,
    transport=TransportSize(batches=16, batch_size=32, repeats=3),
    cloud=CloudSize(batches=3, repeats=2),
    cloud_batch=32,
    memory=MemorySize(img_size=640, batch_size=32, edge_images=64, train_batches=2, also_default_cloud=True),
    scale=ScaleSize(edges=(1, 2, 4, 8), images_per_edge_phase=1024, image_counts=(128, 1024, 10016), small_repeats=3),
)
QUICK = Sizes(
    edge=EdgeSize(img_size=320, images=32, repeats=2, sweep_images=8),
    wire_img=320,
    wire_batch=8,
    transport=TransportSize(batches=6, batch_size=32, repeats=2),
    cloud=CloudSize(batches=2, repeats=2, images_per_batch=4),
    cloud_batch=4,
    memory=MemorySize(img_size=320, batch_size=8, edge_images=16, train_batches=2),
    scale=ScaleSize(edges=(1, 2, 4, 8), images_per_edge_phase=256, image_counts=(128, 512)),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions (CI smoke test, ~2 min)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown summary to this file")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated subset of {', '.join(GROUPS)}")
    parser.add_argument(
        "--assets",
        type=Path,
        default=Path(os.environ.get("MISTNET_ASSETS", "../shared/data")),
        help="folder holding coco128/ and weights/yolov5n.pt [env MISTNET_ASSETS]",
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("MISTNET_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="a RabbitMQ administrator's URL; the bench makes its own vhost and users [env MISTNET_BENCH_AMQP_URL]",
    )
    parser.add_argument("--management-url", default=None, help="RabbitMQ management API (default: the AMQP host:15672)")
    parser.add_argument(
        "--s3-endpoint",
        default=os.environ.get("S3_ENDPOINT_URL", "http://127.0.0.1:8333"),
        help="[env S3_ENDPOINT_URL]",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one, removed after)"
    )


def _services(args: argparse.Namespace) -> Services:
    key, secret = os.environ.get("ACCESS_KEY_ID"), os.environ.get("SECRET_ACCESS_KEY")
    if not key or not secret:
        raise SystemExit(
            "mistnet bench: set ACCESS_KEY_ID and SECRET_ACCESS_KEY to S3 keys that may create buckets "
            "(for deploy/services.sh: the identity in deploy/seaweedfs/s3-identities.json)"
        )
    host = args.amqp_url.split("@")[-1].split("/")[0].split(":")[0] or "127.0.0.1"
    management = args.management_url or f"http://{host}:15672"
    return Services(args.amqp_url, management, args.s3_endpoint, key, secret)


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _machine() -> str:
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (GPU figures not measured)"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{cpu_cores()} CPU cores ({model}), {ram:.0f} GiB RAM, {gpu}; torch {torch.__version__}"


def measure(env: BenchEnv, assets: Path, sizes: Sizes, groups: set[str]) -> list[Figure]:
    """Every figure of ``groups``, in report order."""
    coco128, weights = assets / "coco128", assets / "weights" / "yolov5n.pt"
    figures: dict[str, Figure] = {}
    if "edge" in groups:
        _progress("edge: release pipeline vs bare extractor forward")
        figures["edge"] = bench_edge(env, coco128, weights, sizes.edge, _progress)
    if "wire" in groups:
        _progress("wire: bytes per image")
        for figure in bench_wire(coco128, weights, sizes.wire_img, sizes.wire_batch):
            figures[figure.key] = figure
    if groups & {"transport", "cloud", "scale"}:
        figures.update(_through_the_cloud(env, weights, sizes, groups))
    if "memory" in groups:
        _progress("memory: peak RSS of the daemons (yolov5s-size features)")
        for figure in bench_memory(env, coco128, sizes.memory, _progress):
            figures[figure.key] = figure
    return [figures[key] for key in FIGURE_KEYS if key in figures]


def _through_the_cloud(env: BenchEnv, weights: Path, sizes: Sizes, groups: set[str]) -> dict[str, Figure]:
    """Transport, then the scale edges series into the same cloud child, then training on what it stored."""
    loaded = load_model(weights, SYNTHETIC_IMG)
    spec_fields = {"weights": str(weights), "img_size": SYNTHETIC_IMG, "edges": ",".join(env.edge_names)}
    model = ModelSpec(
        arch=loaded.manifest.arch,
        cut_layer=4,
        img_size=SYNTHETIC_IMG,
        extractor_sha256=extractor_sha256(loaded.state, 4),
    )
    chw = feature_shape(build_arch(loaded.manifest.arch), 4, SYNTHETIC_IMG)
    figures: dict[str, Figure] = {}
    store = env.work / "cloud-store"
    asyncio.run(declare_inbox(env))
    daemon = start_cloud(env, "cloud", store, **spec_fields)
    try:
        _progress("transport: edge -> RabbitMQ + S3 -> cloud store vs raw S3 put + get")
        figures["transport"] = bench_transport(
            env, daemon, store, model=model, chw=chw, size=sizes.transport, progress=_progress
        )
        if "scale" in groups:
            feeder = Feeder(env, model, chw, sizes.scale.batch_size)
            feeder.stored = store_count(store).batches  # transport's batches, all from the first edge
            feeder.next_seq[env.edge_names[0]] = feeder.stored
            _progress("scale: 1, 2, 4, 8 edges")
            figures["scale_edges"] = edges_series(feeder, daemon, store, sizes.scale, _progress)
    finally:
        _stop(daemon)
    if "cloud" in groups:
        _progress("cloud: training from the ingested store vs in memory")
        settings = env.cloud_settings(store=store, batch_size=sizes.cloud_batch, **spec_fields)
        figures["cloud"] = bench_cloud(store, settings, sizes.cloud, _progress)
    if "scale" in groups:
        _progress(f"scale: {sizes.scale.image_counts[0]} to {sizes.scale.image_counts[-1]} images")

        def fresh_cloud(rep: int) -> tuple[Daemon, Path]:
            asyncio.run(declare_inbox(env))
            images_store = env.work / f"scale-store-{rep}"
            return start_cloud(env, f"cloud-scale-{rep}", images_store, **spec_fields), images_store

        figures["scale_images"] = images_series(
            env, fresh_cloud, model=model, chw=chw, size=sizes.scale, progress=_progress
        )
    return figures


def _stop(daemon: Daemon) -> None:
    code = daemon.stop()
    if code != 0:
        raise daemon.fail(f"exited with {code} after SIGTERM")


def run(args: argparse.Namespace) -> int:
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        sys.stderr.write(f"mistnet bench: unknown --only {sorted(unknown)}; choose from {', '.join(GROUPS)}\n")
        return 2
    assets = args.assets.resolve()
    if not (assets / "coco128").is_dir() or not (assets / "weights" / "yolov5n.pt").is_file():
        sys.stderr.write(f"mistnet bench: {assets} must hold coco128/ and weights/yolov5n.pt (--assets)\n")
        return 2
    services = _services(args)
    sizes = QUICK if args.quick else FULL
    header: dict[str, Any] = {
        "command": shlex.join(["mistnet", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else "mistnet bench",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(),
        "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "quick": args.quick,
    }
    started = time.monotonic()
    threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory(prefix="mistnet-bench-") as tmp:
            work = args.work_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            with bench_env(services, work) as env:
                figures = measure(env, assets, sizes, groups)
    except (DaemonError, RuntimeError, OSError) as exc:
        sys.stderr.write(f"mistnet bench: {exc}\n")
        return 1
    finally:
        torch.set_num_threads(threads)
    header["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    header["seconds"] = round(time.monotonic() - started, 1)
    summary = markdown(figures, header)
    if args.out is not None:
        args.out.write_text(summary)
    if args.json:
        report = {**header, "figures": {f.key: f.to_json() for f in figures}}
        report["all_met"] = all(f.met is not False for f in figures)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(summary)
    return 0

"""Memory figures: peak RSS of the real daemons, run as child processes, at yolov5s-size features.

Edge: ``mistnet edge --once`` releasing COCO128 images with randomly initialised yolov5s weights
(features 128x80x80 at 640), batch 32. Cloud: ``mistnet cloud`` with the same weights running one
round (train, evaluate, checkpoint, publish) on synthetic batches of that size that a simulated edge
sends through RabbitMQ + S3. Peak RSS is each child's ``VmHWM`` (see :mod:`mistnet.bench.processes`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mistnet.bench.edge import declare_inbox, link_dataset
from mistnet.bench.env import BenchEnv, child_env
from mistnet.bench.processes import Daemon, start, start_cloud
from mistnet.bench.report import Figure
from mistnet.bench.synthetic import EdgeSender, release_spec, synthetic_batches
from shared.wire.features import ModelSpec
from shared.yolo.artifact import Manifest, extractor_sha256, load_model, save_artifact
from shared.yolo.network import build_model
from shared.yolo.table import build_arch, feature_shape

Progress = Callable[[str], None]
GiB = 1 << 30


@dataclass(frozen=True)
class MemorySize:
    img_size: int
    batch_size: int
    edge_images: int
    train_batches: int
    also_default_cloud: bool = False  # measure the cloud without low_memory_training as well
    arch: str = "yolov5s"
    cut_layer: int = 4


def random_weights(folder: Path, arch: str, img_size: int, names: list[str]) -> Path:
    """An artifact of ``arch`` with random (seeded) weights: the sizes matter here, not the accuracy."""
    torch.manual_seed(0)
    model = build_model(arch, len(names))
    return save_artifact(folder, model.state_dict(), Manifest(arch=arch, nc=len(names), names=names, img_size=img_size))


def _finish(daemon: Daemon, timeout_s: float) -> int:
    code = daemon.wait(timeout_s)
    if code != 0 or not daemon.peak_rss_bytes:
        raise daemon.fail(f"exited with {code}")
    return daemon.peak_rss_bytes


def edge_peak(env: BenchEnv, coco128: Path, weights: Path, size: MemorySize) -> int:
    asyncio.run(declare_inbox(env))
    data = link_dataset(coco128, env.work / "memory-data", size.edge_images)
    fields = env.edge_fields(
        env.edge_names[1], data=data, weights=weights, img_size=size.img_size, batch_size=size.batch_size,
        cut_layer=size.cut_layer, once=True, state_dir=env.work / "memory-edge-state", device="cpu",
    )  # fmt: skip
    return _finish(start("memory-edge", ["edge"], child_env(fields), env.work / "logs"), 900)


async def _feed(env: BenchEnv, edge: str, model: ModelSpec, chw: tuple[int, int, int], size: MemorySize) -> None:
    spec = release_spec(env, edge, model, chw)
    rng = np.random.default_rng(3)
    records = list(synthetic_batches(spec, size.train_batches, size.batch_size, rng))
    records += synthetic_batches(spec, 1, max(1, size.batch_size // 4), rng, split="val", first_seq=len(records))
    async with EdgeSender(env, edge) as sender:
        await sender.send_all(records)
        await sender.done(records, chw)


def cloud_peak(env: BenchEnv, weights: Path, model: ModelSpec, size: MemorySize, *, low_memory: bool, edge: str) -> int:
    chw = feature_shape(build_arch(size.arch), size.cut_layer, size.img_size)
    daemon = start_cloud(
        env, f"memory-cloud-{edge}", env.work / f"memory-cloud-store-{edge}", weights=str(weights),
        img_size=size.img_size, batch_size=size.batch_size, edges=edge, rounds=1, epochs=1, cut_layer=size.cut_layer,
        low_memory_training=low_memory,
    )  # fmt: skip
    try:
        asyncio.run(_feed(env, edge, model, chw, size))
    except BaseException:
        daemon.stop()
        raise
    return _finish(daemon, 1800)


def bench_memory(env: BenchEnv, coco128: Path, size: MemorySize, progress: Progress) -> list[Figure]:
    """``memory_edge`` (bar ≤ 1 GiB) and ``memory_cloud`` (bar ≤ 4 GiB), peak RSS in GiB."""
    names = [f"class{i}" for i in range(80)]
    weights = random_weights(env.work / f"{size.arch}-random", size.arch, size.img_size, names)
    state = load_model(weights, size.img_size).state
    model = ModelSpec(
        arch=size.arch, cut_layer=size.cut_layer, img_size=size.img_size,
        extractor_sha256=extractor_sha256(state, size.cut_layer),
    )  # fmt: skip
    c, h, w = feature_shape(build_arch(size.arch), size.cut_layer, size.img_size)
    edge = edge_peak(env, coco128, weights, size)
    progress(f"memory: edge peak RSS {edge / GiB:.2f} GiB")
    asyncio.run(declare_inbox(env))  # empty it: the cloud must see only its own edge's batches
    cloud = cloud_peak(env, weights, model, size, low_memory=True, edge=env.edge_names[2])
    progress(f"memory: cloud peak RSS {cloud / GiB:.2f} GiB (low_memory_training)")
    default = None
    if size.also_default_cloud:
        asyncio.run(declare_inbox(env))
        default = cloud_peak(env, weights, model, size, low_memory=False, edge=env.edge_names[3])
        progress(f"memory: cloud peak RSS {default / GiB:.2f} GiB (default settings)")
    without = "not measured" if default is None else f"{default / GiB:.2f} GiB"
    what = f"{size.arch} (random weights) cut {size.cut_layer} at {size.img_size}: features {c}x{h}x{w}"
    return [
        Figure(
            "memory_edge", "Edge daemon peak RSS", round(edge / GiB, 3), "GiB", 1.0, "max",
            f"`mistnet edge --once` on {size.edge_images} COCO128 images, {what}, batch {size.batch_size}, "
            f"child process, peak VmHWM.",
            {"peak_rss_bytes": edge},
        ),
        Figure(
            "memory_cloud", "Cloud daemon peak RSS", round(cloud / GiB, 3), "GiB", 4.0, "max",
            f"`mistnet cloud`, one round (train {size.train_batches} x {size.batch_size} images, evaluate, checkpoint,"
            f" publish) on synthetic batches through RabbitMQ + S3, {what}, with `low_memory_training` (recomputed "
            f"activations, large frees returned; off by default: {without}), child process, peak VmHWM.",
            {"peak_rss_bytes": cloud, "default_settings_peak_rss_bytes": default},
        ),
    ]  # fmt: skip

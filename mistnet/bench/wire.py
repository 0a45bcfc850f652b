"""Wire figures: bytes per image of a real batch on the wire vs C·H·W/8 + labels, and vs the anchors' format.

The batch is ``batch_size`` COCO128 images through the edge's extractor and release (rr-sym ε = 100);
its bytes are the message body plus the claim-checked object. The anchors (Sedna/Plato) ship the same
features as float32 tensors, pickled: here the same released bits as a float32 tensor with the labels,
written by ``torch.save`` (dumped only, never loaded).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from mistnet.bench.edge import load_extractor
from mistnet.bench.report import Figure
from producers.edge.extract import activation_bits, prepare_extractor
from producers.edge.release import ReleaseSpec, release_batch
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.privacy import privacy_params
from shared.wire.features import ModelSpec, unpack_bits
from shared.yolo.artifact import extractor_sha256, load_model


def bench_wire(coco128: Path, weights: Path, img_size: int, batch_size: int, cut_layer: int = 4) -> list[Figure]:
    """``wire`` (ours / (C·H·W/8 + labels), bar ≤ 1.02) and ``wire_vs_anchor`` (anchors' bytes / ours)."""
    extractor = prepare_extractor(load_extractor(weights, img_size, cut_layer), torch.device("cpu"))
    batch = next(iter_batches(discover(coco128)[:batch_size], img_size, batch_size, uint8=True))
    bits = np.concatenate([activation_bits(extractor, batch.images[i : i + 1]) for i in range(len(batch.samples))])
    n, c, h, w = bits.shape
    targets = batch.targets.numpy()
    loaded = load_model(weights, img_size)
    spec = ReleaseSpec(
        job="bench",
        edge="edge",
        model=ModelSpec(
            arch=loaded.manifest.arch,
            cut_layer=cut_layer,
            img_size=img_size,
            extractor_sha256=extractor_sha256(loaded.state, cut_layer),
        ),
        privacy=privacy_params("rr-sym", 100.0),
        feature_shape=(c, h, w),
        inline_threshold_bytes=1 << 20,
        uri_of=lambda key: f"s3://bucket/{key}",
    )
    record = release_batch(
        bits, targets, image_ids=[f"{i:032x}" for i in range(n)], split="train", seq=0, spec=spec,
        rng=np.random.default_rng(0), created_at=0.0,
    )  # fmt: skip
    ours = record.wire_bytes
    label_bytes = targets.size * 4
    floor = n * c * h * w / 8 + label_bytes
    payload = record.payload if record.payload is not None else b""
    released = unpack_bits(payload, (n, c, h, w)) if payload else bits
    buffer = io.BytesIO()
    torch.save({"features": torch.from_numpy(released).float(), "targets": batch.targets}, buffer)
    anchors = buffer.getbuffer().nbytes
    how = "claim check (body + S3 object)" if record.object_key else "inline"
    common = {"images": n, "feature_chw": [c, h, w], "label_bytes": label_bytes}
    return [
        Figure(
            "wire",
            "Wire bytes vs C·H·W/8 + labels",
            round(ours / floor, 4),
            "x",
            1.02,
            "max",
            f"one batch of {n} COCO128 images at {img_size} ({c}x{h}x{w} bits each), {how}: {ours / n:,.0f} bytes "
            f"per image vs {floor / n:,.0f} (C·H·W/8 = {c * h * w // 8:,} + {label_bytes / n:.0f} bytes of labels).",
            {**common, "bytes": ours, "floor_bytes": floor},
        ),
        Figure(
            "wire_vs_anchor",
            "Anchors' bytes (float32, pickled) vs ours",
            round(anchors / ours, 2),
            "x",
            None,
            "min",
            f"the same batch as float32 tensors with its labels, written by torch.save (pickle): "
            f"{anchors / n:,.0f} bytes per image vs our {ours / n:,.0f}.",
            {**common, "anchor_bytes": anchors, "bytes": ours},
        ),
    ]

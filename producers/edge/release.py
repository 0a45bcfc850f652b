"""Private release, pure: activation bits -> randomised response -> packbits -> feature message.

The randomness comes from a per-batch generator derived from the daemon's seed sequence and the
batch sequence number, so no two batches share noise and a seeded run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from producers.edge.ledger import OutboxRecord, Split
from shared.privacy import PrivacyParams, randomize_packed
from shared.wire import names
from shared.wire.features import (
    MESSAGE_TYPE,
    BlobRef,
    FeatureBatch,
    ModelSpec,
    PrivacyBlock,
    encode_batch,
    encode_targets,
    sha256_hex,
)


@dataclass(frozen=True)
class ReleaseSpec:
    """What every batch of this edge shares: identity, model, mechanism and where payloads go."""

    job: str
    edge: str
    model: ModelSpec
    privacy: PrivacyParams
    feature_shape: tuple[int, int, int]  # (C, H, W) of the extractor's output at img_size
    inline_threshold_bytes: int
    uri_of: Callable[[str], str]  # object key -> s3://bucket/key of the blob store

    @property
    def bits_per_image(self) -> int:
        c, h, w = self.feature_shape
        return c * h * w


def batch_rng(seeds: np.random.SeedSequence, seq: int) -> np.random.Generator:
    """The generator of batch ``seq``: independent across batches, reproducible for a fixed seed."""
    return np.random.default_rng(np.random.SeedSequence(seeds.entropy, spawn_key=(*seeds.spawn_key, seq)))


def randomize_and_pack(bits: np.ndarray, spec: ReleaseSpec, rng: np.random.Generator) -> bytes:
    """``(N, C, H, W) bool`` -> randomised, packed bytes; pieces of one batch concatenate exactly.

    C·H·W is a multiple of 8 (channel counts are), so each image fills whole bytes: the bits are packed
    first and randomised in packed form, an image (row) at a time.
    """
    if bits.ndim != 4 or bits.dtype != np.bool_ or tuple(bits.shape[1:]) != spec.feature_shape:
        raise ValueError(f"bits must be (N, *{spec.feature_shape}) bool, got {bits.shape} {bits.dtype}")
    assert spec.bits_per_image % 8 == 0, "an image must fill whole bytes"
    packed = np.packbits(bits.reshape(bits.shape[0], spec.bits_per_image), axis=1)
    return randomize_packed(packed, spec.privacy, rng).tobytes()


def build_message(
    payload: bytes,
    targets: np.ndarray,
    *,
    image_ids: Sequence[str],
    split: Split,
    seq: int,
    spec: ReleaseSpec,
    created_at: float,
) -> OutboxRecord:
    """The message of batch ``seq`` around its randomised, packed ``payload``.

    ``targets``: ``(M, 6) float32 [img, cls, cx, cy, w, h]`` normalised to the letterboxed input.
    The payload goes inline when the whole message stays below the threshold, else it is to be
    uploaded under its content-addressed key and the message carries ``ref {uri, size, sha256}``.
    """
    n = len(image_ids)
    if len(payload) * 8 != n * spec.bits_per_image:
        raise ValueError(f"payload of {len(payload)} bytes does not hold {n} images of {spec.feature_shape}")
    fields: dict[str, object] = {
        "schema": 1,
        "type": MESSAGE_TYPE,
        "job": spec.job,
        "edge": spec.edge,
        "seq": seq,
        "split": split,
        "created_at": created_at,
        "model": spec.model,
        "privacy": PrivacyBlock.model_validate(spec.privacy.to_wire(spec.bits_per_image)),
        "shape": [n, *spec.feature_shape],
        "encoding": "packbits",
        "image_ids": list(image_ids),
        "targets": encode_targets(targets),
    }
    message_id = names.feature_message_id(spec.job, spec.edge, seq)
    if len(payload) < spec.inline_threshold_bytes:
        body = encode_batch(FeatureBatch.model_validate({**fields, "payload": payload}))
        if len(body) < spec.inline_threshold_bytes:
            return OutboxRecord(spec.job, seq, message_id, split, n, body, None, None)
    digest = sha256_hex(payload)
    key = names.feature_object_key(spec.job, spec.edge, digest)
    ref = BlobRef(uri=spec.uri_of(key), size=len(payload), sha256=digest)
    body = encode_batch(FeatureBatch.model_validate({**fields, "ref": ref}))
    return OutboxRecord(spec.job, seq, message_id, split, n, body, payload, key)


def release_batch(
    bits: np.ndarray,
    targets: np.ndarray,
    *,
    image_ids: Sequence[str],
    split: Split,
    seq: int,
    spec: ReleaseSpec,
    rng: np.random.Generator,
    created_at: float,
) -> OutboxRecord:
    """Randomise ``bits`` ``(N, C, H, W) bool`` of a whole batch and build its message."""
    if bits.shape[0] != len(image_ids):
        raise ValueError(f"{bits.shape[0]} images of bits for {len(image_ids)} image ids")
    payload = randomize_and_pack(bits, spec, rng)
    return build_message(payload, targets, image_ids=image_ids, split=split, seq=seq, spec=spec, created_at=created_at)

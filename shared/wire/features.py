"""Feature batches: the msgpack message an edge publishes and the cloud validates (DESIGN §4).

The decoder bounds everything before allocating: msgpack lengths are capped, the declared shape is
checked against limits and the payload size before any array is built.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/msgpack"
MESSAGE_TYPE = "mistnet.features"

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Dim = Annotated[int, Field(ge=1, le=1 << 16)]


class Reason(StrEnum):
    """Why a message was refused; carried in the dead-letter ``x-mistnet-reason`` header."""

    UNDECODABLE = "undecodable"
    SCHEMA_VERSION = "schema-version"
    INVALID_FIELD = "invalid-field"
    SHAPE_MISMATCH = "shape-mismatch"
    SIZE_MISMATCH = "size-mismatch"
    SHA256_MISMATCH = "sha256-mismatch"
    MISSING_OBJECT = "missing-object"
    REF_OUTSIDE_PREFIX = "ref-outside-prefix"
    USER_ID_MISMATCH = "user-id-mismatch"
    OVERSIZE = "oversize"
    BAD_TARGETS = "bad-targets"
    MODEL_MISMATCH = "model-mismatch"
    NON_FINITE = "non-finite"
    WRONG_ROUND = "wrong-round"


class WireError(ValueError):
    """A message that must not be processed; ``reason`` says which rule it broke."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message


@dataclass(frozen=True)
class WireLimits:
    """Upper bounds the cloud enforces before allocating anything."""

    max_message_bytes: int = 16 << 20
    max_object_bytes: int = 1 << 30
    max_images: int = 4096
    max_targets: int = 1 << 20
    max_bits: int = 1 << 34


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ModelSpec(_Frozen):
    """Which extractor produced the features; the cloud refuses features from another one."""

    arch: Annotated[str, StringConstraints(pattern=r"^yolov5[nsmlx]$")]
    cut_layer: Annotated[int, Field(ge=1, le=64)]
    img_size: Annotated[int, Field(ge=32, le=8192)]
    extractor_sha256: Sha256


class PrivacyBlock(_Frozen):
    """The mechanism, its parameters and guarantees (ε_bit per bit, ε_image per image); None = no bound."""

    mechanism: Literal["rr-sym", "rr-opt", "none"]
    # None (mechanism none) is left out by encode_batch's exclude_none, so these default to None.
    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    p: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    q: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    epsilon_bit: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    epsilon_image: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    bits_per_image: Annotated[int, Field(ge=1)]
    labels_in_clear: bool


class BlobRef(_Frozen):
    """Claim check: where the payload lies, its size and digest."""

    uri: Annotated[str, StringConstraints(max_length=1024, pattern=r"^s3://[a-z0-9.-]{3,63}/.+$")]
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256

    @property
    def bucket(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[1]


class TargetsArray(_Frozen):
    """Labels as little-endian float32 rows ``[img, cls, cx, cy, w, h]`` normalised to the input."""

    dtype: Literal["<f4"]
    rows: Annotated[int, Field(ge=0)]
    data: bytes


class FeatureBatch(_Frozen):
    """One batch of released features from one edge (DESIGN §4)."""

    schema_version: Literal[1] = Field(alias="schema")
    type: Literal["mistnet.features"]
    job: Name
    edge: Name
    seq: Annotated[int, Field(ge=0, lt=1 << 62)]
    split: Literal["train", "val"]
    created_at: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    model: ModelSpec
    privacy: PrivacyBlock
    shape: Annotated[list[Dim], Field(min_length=4, max_length=4)]
    encoding: Literal["packbits"]
    payload: bytes | None = None
    ref: BlobRef | None = None
    image_ids: list[Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]]
    targets: TargetsArray

    @model_validator(mode="after")
    def _one_payload(self) -> FeatureBatch:
        if (self.payload is None) == (self.ref is None):
            raise ValueError("exactly one of 'payload' (inline) and 'ref' (claim check) must be given")
        return self

    @property
    def dims(self) -> tuple[int, int, int, int]:
        """``(N, C, H, W)`` of the released bits."""
        n, c, h, w = self.shape
        return (n, c, h, w)

    @property
    def num_images(self) -> int:
        return self.shape[0]

    @property
    def bits_per_image(self) -> int:
        return self.shape[1] * self.shape[2] * self.shape[3]

    @property
    def payload_size(self) -> int:
        """Bytes of the packed bits: ceil(N·C·H·W / 8)."""
        return math.ceil(self.num_images * self.bits_per_image / 8)


def encode_batch(batch: FeatureBatch) -> bytes:
    """The msgpack body of ``batch``."""
    body: bytes = msgpack.packb(batch.model_dump(by_alias=True, exclude_none=True), use_bin_type=True)
    return body


def pack_bits(bits: np.ndarray) -> bytes:
    """(N, C, H, W) bool -> bytes, 8 bits a byte, big-endian bit order (``np.packbits``)."""
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_bits(payload: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack_bits`: (N, C, H, W) bool."""
    count = math.prod(shape)
    return np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=count).view(np.bool_).reshape(shape)


def encode_targets(targets: np.ndarray) -> TargetsArray:
    """(M, 6) float -> the wire form."""
    arr = np.ascontiguousarray(targets, dtype="<f4").reshape(-1, 6)
    return TargetsArray(dtype="<f4", rows=arr.shape[0], data=arr.tobytes())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_batch(body: bytes, limits: WireLimits) -> FeatureBatch:
    """Parse and validate a message body; raises :class:`WireError` with the rule it broke."""
    if len(body) > limits.max_message_bytes:
        raise WireError(Reason.OVERSIZE, f"message of {len(body)} bytes exceeds {limits.max_message_bytes}")
    try:
        raw = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_ext_len=0,
            max_str_len=4096,
            max_array_len=limits.max_images + 8,
            max_map_len=64,
            max_bin_len=limits.max_message_bytes,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(Reason.UNDECODABLE, f"body is not valid msgpack ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict):
        raise WireError(Reason.UNDECODABLE, f"body is a msgpack {type(raw).__name__}, expected a map")
    if raw.get("schema") != SCHEMA_VERSION:
        raise WireError(
            Reason.SCHEMA_VERSION,
            f"schema {raw.get('schema')!r} is not supported (expected {SCHEMA_VERSION})",
        )
    try:
        batch = FeatureBatch.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError(Reason.INVALID_FIELD, f"field {where}: {first['msg']}") from None
    _check_bounds(batch, limits)
    return batch


def _check_bounds(batch: FeatureBatch, limits: WireLimits) -> None:
    n = batch.num_images
    bits = n * batch.bits_per_image
    if n > limits.max_images or bits > limits.max_bits:
        raise WireError(Reason.OVERSIZE, f"shape {list(batch.shape)} exceeds the limits of this consumer")
    if len(batch.image_ids) != n:
        raise WireError(Reason.SHAPE_MISMATCH, f"{len(batch.image_ids)} image ids for {n} images")
    if batch.privacy.bits_per_image != batch.bits_per_image:
        raise WireError(Reason.SHAPE_MISMATCH, "privacy.bits_per_image does not match the shape")
    if batch.payload is not None and len(batch.payload) != batch.payload_size:
        raise WireError(
            Reason.SIZE_MISMATCH,
            f"inline payload is {len(batch.payload)} bytes, shape needs {batch.payload_size}",
        )
    if batch.ref is not None:
        if batch.ref.size != batch.payload_size:
            raise WireError(
                Reason.SIZE_MISMATCH,
                f"ref size {batch.ref.size} does not match the shape ({batch.payload_size} bytes)",
            )
        if batch.ref.size > limits.max_object_bytes:
            raise WireError(
                Reason.OVERSIZE,
                f"referenced object of {batch.ref.size} bytes exceeds {limits.max_object_bytes}",
            )
    t = batch.targets
    if t.rows > limits.max_targets or len(t.data) != t.rows * 24:
        raise WireError(Reason.BAD_TARGETS, f"targets hold {len(t.data)} bytes for {t.rows} rows of 6 float32")


def decode_targets(batch: FeatureBatch, num_classes: int) -> np.ndarray:
    """(M, 6) float32 ``[img, cls, cx, cy, w, h]`` after checking every value is in range."""
    arr = np.frombuffer(batch.targets.data, dtype="<f4").reshape(-1, 6)
    if arr.size and not np.isfinite(arr).all():
        raise WireError(Reason.BAD_TARGETS, "targets contain NaN or infinity")
    img, cls, boxes = arr[:, 0], arr[:, 1], arr[:, 2:]
    bad = (
        (img < 0)
        | (img >= batch.num_images)
        | (img != np.round(img))
        | (cls < 0)
        | (cls >= num_classes)
        | (cls != np.round(cls))
        | (boxes < 0).any(axis=1)
        | (boxes > 1).any(axis=1)
        | (boxes[:, 2:] <= 0).any(axis=1)
    )
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise WireError(Reason.BAD_TARGETS, f"target row {row} {arr[row].tolist()} is out of range")
    return arr.astype(np.float32)


def check_payload(batch: FeatureBatch, payload: bytes) -> None:
    """The payload (inline or fetched) has the declared size and sha256."""
    if len(payload) != batch.payload_size:
        raise WireError(Reason.SIZE_MISMATCH, f"payload is {len(payload)} bytes, shape needs {batch.payload_size}")
    expected = batch.ref.sha256 if batch.ref is not None else None
    if expected is not None and sha256_hex(payload) != expected:
        raise WireError(Reason.SHA256_MISMATCH, "payload sha256 does not match the reference")


def wire_dict(batch: FeatureBatch) -> dict[str, Any]:
    """The batch as the plain map that goes on the wire (for tests and tools)."""
    return batch.model_dump(by_alias=True, exclude_none=True)

"""FedAvg updates: the msgpack message an edge publishes on ``mistnet.features`` and its tensor file.

The message (AMQP type ``mistnet.update``, routing key ``<job>.<edge>``) never carries tensors: it
references an fp16 safetensors file under the edge's prefix ``<job>/updates/<edge>/`` holding
``local weights - global weights`` for every entry of the model's state dict (BatchNorm running
statistics included; ``num_batches_tracked`` stays int64). Everything is bounded before allocation:
the body before parsing, the referenced size before downloading, the safetensors header before
loading a tensor.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.wire.features import BlobRef, Name, Reason, Sha256, WireError

UPDATE_SCHEMA_VERSION = 1
UPDATE_TYPE = "mistnet.update"
MAX_UPDATE_MESSAGE_BYTES = 64 << 10
#: Room for the safetensors JSON header on top of the tensor bytes a model's layout needs.
MAX_HEADER_BYTES = 1 << 20
#: What FedAvg's privacy amounts to, said wherever its privacy is reported.
FEDAVG_PRIVACY_NOTE = (
    "FedAvg keeps raw images on the edge but applies no randomisation: the fp16 weight update each edge "
    "sends can leak information about its training images (gradient inversion, membership inference)."
)

Finite = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, lt=1 << 62)]

#: safetensors dtype name -> bytes per element, for the dtypes an update may hold.
DTYPE_BYTES = {"F16": 2, "F32": 4, "I64": 8}
#: (safetensors dtype, shape) of one tensor.
TensorSpec = tuple[str, tuple[int, ...]]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class TrainLosses(_Frozen):
    """Mean per-image losses of the edge's local training."""

    box: Finite
    obj: Finite
    cls: Finite


class EdgeMeasurements(_Frozen):
    """What the round cost the edge: compute, memory and the bytes it downloaded."""

    train_s: Finite
    flops: Finite
    peak_rss_bytes: Count
    steps: Count
    skipped_steps: Count
    losses: TrainLosses
    download_bytes: Count
    download_s: Finite


class UpdatePrivacy(_Frozen):
    """FedAvg applies no differential privacy: ``epsilon`` is None and ``note`` says what leaks."""

    mechanism: Literal["fedavg"]
    epsilon: None = None
    note: Annotated[str, StringConstraints(max_length=1000)]


class UpdateMessage(_Frozen):
    """One edge's update for one round (DESIGN §4 envelope: schema, type, job, edge, round, created_at)."""

    schema_version: Literal[1] = Field(alias="schema")
    type: Literal["mistnet.update"]
    job: Name
    edge: Name
    round: Annotated[int, Field(ge=1, le=1_000_000)]
    created_at: Finite
    base_sha256: Sha256
    samples: Annotated[int, Field(ge=1, lt=1 << 40)]
    epochs: Annotated[int, Field(ge=1, le=10_000)]
    encoding: Literal["delta"]
    dtype: Literal["float16"]
    ref: BlobRef
    measurements: EdgeMeasurements
    privacy: UpdatePrivacy


def encode_update(message: UpdateMessage) -> bytes:
    body: bytes = msgpack.packb(message.model_dump(by_alias=True), use_bin_type=True)
    return body


def decode_update(body: bytes) -> UpdateMessage:
    """Parse and validate an update message body; raises :class:`WireError` with the rule it broke."""
    if len(body) > MAX_UPDATE_MESSAGE_BYTES:
        raise WireError(Reason.OVERSIZE, f"update message of {len(body)} bytes exceeds {MAX_UPDATE_MESSAGE_BYTES}")
    try:
        raw = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_ext_len=0,
            max_str_len=4096,
            max_array_len=64,
            max_map_len=64,
            max_bin_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(Reason.UNDECODABLE, f"body is not valid msgpack ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict):
        raise WireError(Reason.UNDECODABLE, f"body is a msgpack {type(raw).__name__}, expected a map")
    if raw.get("schema") != UPDATE_SCHEMA_VERSION:
        raise WireError(Reason.SCHEMA_VERSION, f"schema {raw.get('schema')!r} is not supported")
    try:
        return UpdateMessage.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError(Reason.INVALID_FIELD, f"field {where}: {first['msg']}") from None


def layout_bytes(layout: dict[str, TensorSpec]) -> int:
    """Bytes of the tensor data a safetensors file of ``layout`` holds."""
    return sum(DTYPE_BYTES[dtype] * math.prod(shape) for dtype, shape in layout.values())


def max_update_bytes(layout: dict[str, TensorSpec]) -> int:
    """The largest update file of ``layout`` accepted: its tensors plus a bounded header."""
    return 8 + MAX_HEADER_BYTES + layout_bytes(layout)


def check_update_file(blob: bytes, layout: dict[str, TensorSpec]) -> dict[str, str]:
    """Check a safetensors file's header against ``layout`` exactly, before any tensor is built.

    Names, dtypes, shapes and byte ranges must be exactly those of ``layout`` and the data must fill
    the file. Returns the header's ``__metadata__``. Raises :class:`WireError`.
    """
    header, header_len = _read_header(blob)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WireError(Reason.UNDECODABLE, "safetensors metadata must map strings to strings")
    if set(header) != set(layout):
        missing, extra = sorted(set(layout) - set(header)), sorted(set(header) - set(layout))
        raise WireError(
            Reason.MODEL_MISMATCH,
            f"tensor names differ from the model's: missing {missing[:3]}, unexpected {extra[:3]}",
        )
    spans = [_span(name, header[name], dtype, shape) for name, (dtype, shape) in layout.items()]
    position = 0
    for start, end in sorted(spans):
        if start != position:
            raise WireError(Reason.UNDECODABLE, "tensor data ranges overlap or leave gaps")
        position = end
    if position != len(blob) - 8 - header_len:
        raise WireError(
            Reason.SIZE_MISMATCH, f"tensor data is {len(blob) - 8 - header_len} bytes, the header describes {position}"
        )
    return metadata


def _read_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file (bounded) and its length."""
    if len(blob) < 8:
        raise WireError(Reason.UNDECODABLE, "update file is shorter than a safetensors header")
    header_len = int.from_bytes(blob[:8], "little")
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(blob):
        raise WireError(Reason.OVERSIZE, f"safetensors header of {header_len} bytes is out of bounds")
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(Reason.UNDECODABLE, f"safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise WireError(Reason.UNDECODABLE, "safetensors header is not a JSON object")
    return header, header_len


def _span(name: str, entry: object, dtype: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """``(start, end)`` of a tensor's data after checking its dtype, shape and length."""
    if not isinstance(entry, dict):
        raise WireError(Reason.UNDECODABLE, f"tensor {name} has no header entry")
    got = (entry.get("dtype"), tuple(entry.get("shape") or ()))
    if got != (dtype, shape):
        expected = f"{dtype} {list(shape)}"
        raise WireError(Reason.MODEL_MISMATCH, f"tensor {name} is {got[0]} {list(got[1])}, expected {expected}")
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise WireError(Reason.UNDECODABLE, f"tensor {name} has no valid data_offsets")
    if offsets[1] - offsets[0] != DTYPE_BYTES[dtype] * math.prod(shape):
        raise WireError(Reason.SIZE_MISMATCH, f"tensor {name} spans {offsets[1] - offsets[0]} bytes")
    return offsets[0], offsets[1]

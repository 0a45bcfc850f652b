"""FedAvg control messages on ``mistnet.control``: the cloud's ``start-round`` and ``stop`` (DESIGN §4).

JSON, so operators can read them in the management UI. The global model never travels inline:
``start-round`` carries a claim check ``{uri, size, sha256}`` to the safetensors the cloud put in S3
first. Both are commands (imperative): each edge handles one and acknowledges it once done.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.wire import names
from shared.wire.events import JSON_CONTENT_TYPE
from shared.wire.features import BlobRef, Name, Reason, WireError

CONTROL_SCHEMA_VERSION: Final = 1
START_ROUND_TYPE: Final = "mistnet.start-round"
STOP_TYPE: Final = "mistnet.stop"
#: A control message is a few hundred bytes; anything far larger is refused before parsing.
MAX_CONTROL_BYTES = 64 << 10

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Control(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)

    schema_version: Literal[1] = Field(default=CONTROL_SCHEMA_VERSION, alias="schema")
    job: Name
    created_at: Seconds

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(by_alias=True, mode="json"), allow_nan=False).encode()


class StartRound(_Control):
    """Command: fine-tune the global model ``model`` on your local train images and send the update.

    ``deadline_at`` (Unix seconds, None = none) is when the cloud may aggregate without you, once a
    quorum of edges reported; an update arriving after its round closed is discarded.
    """

    type: Literal["mistnet.start-round"] = START_ROUND_TYPE
    round: Annotated[int, Field(ge=1, le=1_000_000)]
    rounds: Annotated[int, Field(ge=1, le=1_000_000)]
    model: BlobRef
    arch: Annotated[str, StringConstraints(pattern=r"^yolov5[nsmlx]$")]
    nc: Annotated[int, Field(ge=1, le=10_000)]
    img_size: Annotated[int, Field(ge=32, le=8192, multiple_of=32)]
    epochs: Annotated[int, Field(ge=1, le=10_000)]
    batch_size: Annotated[int, Field(ge=1, le=4096)]
    learning_rate: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]
    optimizer: Literal["sgd", "adam"]
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
    weight_decay: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    seed: Annotated[int, Field(ge=0, lt=1 << 62)]
    deadline_at: Seconds | None = None

    @property
    def message_id(self) -> str:
        return names.start_round_message_id(self.job, self.round)


class StopJob(_Control):
    """Command: the job is over (``rounds`` completed); edges started with ``--once`` exit."""

    type: Literal["mistnet.stop"] = STOP_TYPE
    rounds: Annotated[int, Field(ge=0, le=1_000_000)]
    reason: Annotated[str, StringConstraints(max_length=200)]

    @property
    def message_id(self) -> str:
        return names.stop_message_id(self.job)


Control = StartRound | StopJob


def decode_control(body: bytes, content_type: str | None, message_type: str | None) -> Control:
    """Parse and validate a control message; raises :class:`WireError` naming the rule it broke."""
    if content_type != JSON_CONTENT_TYPE:
        raise WireError(Reason.UNDECODABLE, f"content type {content_type!r} is not {JSON_CONTENT_TYPE}")
    model: type[StartRound] | type[StopJob]
    if message_type == START_ROUND_TYPE:
        model = StartRound
    elif message_type == STOP_TYPE:
        model = StopJob
    else:
        raise WireError(Reason.INVALID_FIELD, f"control message type {message_type!r} is not known")
    if len(body) > MAX_CONTROL_BYTES:
        raise WireError(Reason.OVERSIZE, f"control message of {len(body)} bytes exceeds {MAX_CONTROL_BYTES}")
    try:
        raw: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(Reason.UNDECODABLE, f"body is not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise WireError(Reason.UNDECODABLE, f"body is a JSON {type(raw).__name__}, expected an object")
    if raw.get("schema") != CONTROL_SCHEMA_VERSION:
        raise WireError(Reason.SCHEMA_VERSION, f"schema {raw.get('schema')!r} is not supported")
    if raw.get("type") != message_type:
        raise WireError(Reason.INVALID_FIELD, f"body type {raw.get('type')!r} differs from AMQP type {message_type!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError(Reason.INVALID_FIELD, f"field {where}: {first['msg']}") from None

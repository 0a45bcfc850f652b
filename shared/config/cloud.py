"""Settings of the cloud consumer daemon (``mistnet cloud``): expected edges, rounds, training, store, limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.config.base import CommonSettings, MiB, env
from shared.wire.features import WireLimits
from shared.wire.names import check_name


@dataclass(frozen=True)
class ExpectedEdges:
    """Which edges round 1 waits for: ``count`` of them, by ``names`` when those are known."""

    count: int
    names: frozenset[str] | None = None

    def counts(self, edge: str) -> bool:
        """Whether ``edge`` is one of the expected edges (any edge is, when only a count is given)."""
        return self.names is None or edge in self.names


@dataclass(frozen=True)
class EdgeUsers:
    """Which broker user may speak for which edge; a user not listed speaks only for the edge of its name."""

    mapping: dict[str, frozenset[str]]

    def allows(self, user: str | None, edge: str) -> bool:
        if user is None:
            return False
        return edge in self.mapping.get(user, frozenset({user}))


def parse_edges(value: str) -> ExpectedEdges:
    """``"2"`` -> two edges of any name; ``"edge-a,edge-b"`` -> exactly those."""
    text = value.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError("must expect at least one edge")
        return ExpectedEdges(int(text))
    names = [check_name("edge", part.strip()) for part in text.split(",") if part.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError("must be a count (e.g. 2) or distinct edge names separated by commas (edge-a,edge-b)")
    return ExpectedEdges(len(names), frozenset(names))


def parse_edge_users(value: str) -> EdgeUsers:
    """``"gw-1=edge-a,gw-1=edge-b,cam=edge-c"``: user ``gw-1`` speaks for edge-a and edge-b, ``cam`` for edge-c."""
    mapping: dict[str, set[str]] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        user, sep, edge = pair.partition("=")
        if not sep or not user.strip():
            raise ValueError(f"entry {pair!r} is not USER=EDGE")
        mapping.setdefault(user.strip(), set()).add(check_name("edge", edge.strip()))
    return EdgeUsers({user: frozenset(edges) for user, edges in mapping.items()})


class CloudSettings(CommonSettings):
    """Everything ``mistnet cloud`` reads; env ``MISTNET_<NAME>`` or the seed job's / Sedna's names."""

    edges: str = Field(
        "1",
        validation_alias=env("edges"),
        description="Expected edges: a count (2) or names (edge-a,edge-b); round 1 waits for their edge.done.",
    )
    rounds: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1, validation_alias=env("rounds"), description="Training rounds; the job completes after the last."
    )
    epochs: Annotated[int, Field(ge=1, le=10_000)] = Field(
        1, validation_alias=env("epochs", "epochs"), description="Epochs over all features received, per round."
    )
    learning_rate: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = Field(
        0.01, validation_alias=env("learning_rate", "learning_rate"), description="Optimizer learning rate."
    )
    optimizer: Literal["sgd", "adam"] = Field(
        "sgd", validation_alias=env("optimizer"), description="sgd (Nesterov, YOLOv5's default) or adam."
    )
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.937, validation_alias=env("momentum"), description="SGD momentum / Adam beta1 (YOLOv5: 0.937)."
    )
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(
        5e-4, validation_alias=env("weight_decay"), description="Weight decay of conv weights (YOLOv5: 5e-4)."
    )
    store: Path = Field(
        validation_alias=env("store"),
        description="Feature-store folder: received features, SQLite index, checkpoints (resume reads it).",
    )
    model_url: str | None = Field(
        None,
        validation_alias=env("model_url", "model_url"),
        description="Sedna's MODEL_URL: a local folder (or .safetensors path) that receives the latest model.",
    )
    public_val: Path | None = Field(
        None,
        validation_alias=env("public_val"),
        description="Labelled YOLO folder evaluated each round through the deployed pipeline (edge -> bits -> cloud).",
    )
    start_deadline_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None,
        validation_alias=env("start_deadline_s"),
        description="Start round 1 this many seconds after start-up even if not every edge sent edge.done.",
    )
    min_edges: Annotated[int, Field(ge=1)] = Field(
        1,
        validation_alias=env("min_edges"),
        description="Quorum at the deadline: edges that must have sent training features (FedAvg: updates).",
    )
    round_deadline_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None,
        validation_alias=env("round_deadline_s"),
        description="FedAvg: aggregate this many seconds after a round's start once min_edges updates arrived "
        "(unset: wait for every expected edge).",
    )
    delivery_limit: Annotated[int, Field(ge=1, le=1000)] = Field(
        5,
        validation_alias=env("delivery_limit"),
        description="Deliveries of one message before the broker dead-letters it.",
    )
    ingest_retry_s: Annotated[float, Field(ge=0, le=1500, allow_inf_nan=False)] = Field(
        300.0,
        validation_alias=env("ingest_retry_s"),
        description="Seconds a delivery whose ingest fails for a transient reason (S3, disk) is retried in process "
        "before it is requeued; each requeue counts toward delivery_limit. Keep it under the broker's consumer "
        "timeout.",
    )
    prefetch: Annotated[int, Field(ge=1, le=1000)] = Field(
        8, validation_alias=env("prefetch"), description="Unacknowledged feature batches in flight at once."
    )
    max_message_bytes: Annotated[int, Field(ge=1024)] = Field(
        16 * MiB, validation_alias=env("max_message_bytes"), description="Largest message body accepted."
    )
    max_object_bytes: Annotated[int, Field(ge=1024)] = Field(
        1024 * MiB, validation_alias=env("max_object_bytes"), description="Largest referenced S3 object accepted."
    )
    edge_users: str = Field(
        "",
        validation_alias=env("edge_users"),
        description="Broker users speaking for other edge names, USER=EDGE,...; by default a user speaks for its name.",
    )
    seed: int = Field(0, validation_alias=env("seed"), description="Seed of the shuffling and initialisation.")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto",
        validation_alias=env("device"),
        description="Where to train: cpu, cuda, or auto (cuda if present; CUDA trains in mixed precision).",
    )
    low_memory_training: bool = Field(
        False,
        validation_alias=env("low_memory_training"),
        description="Recompute activations in the backward pass and hand large frees back to the system: about "
        "half the training memory (yolov5s, 640, batch 32: 3.6 instead of 5 GB) for about twice the CPU time per "
        "step; results are bit-identical.",
    )

    @field_validator("edges", mode="before")
    @classmethod
    def _edges(cls, value: Any) -> str:
        text = str(value)
        parse_edges(text)
        return text

    @field_validator("edge_users")
    @classmethod
    def _edge_users(cls, value: str) -> str:
        parse_edge_users(value)
        return value

    @model_validator(mode="after")
    def _quorum(self) -> CloudSettings:
        if self.min_edges > self.expected_edges.count:
            raise ValueError(f"min_edges={self.min_edges} exceeds the {self.expected_edges.count} expected edges")
        if self.aggregation_algorithm == "fedavg" and self.expected_edges.names is None:
            raise ValueError(
                "aggregation_algorithm=fedavg needs the edges by name (edges=edge-a,edge-b): "
                "the cloud declares each edge's control queue and waits for each one's update"
            )
        return self

    @property
    def expected_edges(self) -> ExpectedEdges:
        return parse_edges(self.edges)

    @property
    def speakers(self) -> EdgeUsers:
        return parse_edge_users(self.edge_users)

    @property
    def wire_limits(self) -> WireLimits:
        return WireLimits(max_message_bytes=self.max_message_bytes, max_object_bytes=self.max_object_bytes)

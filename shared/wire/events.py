"""JSON events on ``mistnet.events`` and control messages on ``mistnet.control`` (DESIGN §4).

Events are past tense (``round.completed``) and JSON so operators can read them in the management UI.
Each carries the envelope ``schema, type, job, id, source, created_at``; readers ignore unknown fields.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EVENT_SCHEMA_VERSION = 1
JSON_CONTENT_TYPE = "application/json"


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    schema_version: int = Field(default=EVENT_SCHEMA_VERSION, alias="schema")
    type: str
    job: str
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    source: str
    created_at: float = Field(default_factory=time.time)

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(by_alias=True, mode="json"), allow_nan=False).encode()


class Losses(BaseModel):
    box: float
    obj: float
    cls: float


class ValMetrics(BaseModel):
    """Detection metrics of one evaluation; ``val_samples`` images were evaluated."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    val_samples: int


class PrivacySummary(BaseModel):
    """The mechanism and its guarantees; extra fields (FedAvg's ``note``) are kept."""

    model_config = ConfigDict(extra="allow")

    mechanism: str
    epsilon: float | None
    epsilon_bit: float | None
    epsilon_image: float | None


class ModelRef(BaseModel):
    uri: str
    sha256: str


class RoundCompleted(_Event):
    """One training round finished, was evaluated and its model published."""

    type: Literal["round.completed"] = "round.completed"
    round: int
    rounds: int
    algorithm: Literal["mistnet", "fedavg"]
    started_at: float
    finished_at: float
    duration_s: float
    epochs: int
    samples_total: int
    samples_per_edge: dict[str, int]
    losses: Losses
    val: ValMetrics | None
    public_val: ValMetrics | None = None
    #: The pretrained model on the same sets before any training (round 1 only): the bits-only baseline.
    baseline_val: ValMetrics | None = None
    baseline_public_val: ValMetrics | None = None
    privacy: PrivacySummary
    bytes_received: int
    bytes_received_total: int
    model: ModelRef


class JobCompleted(_Event):
    type: Literal["job.completed"] = "job.completed"
    rounds: int
    algorithm: Literal["mistnet", "fedavg"]
    final_val: ValMetrics | None
    model: ModelRef | None


class EdgeDone(_Event):
    """An edge has released its whole dataset (it may release more if new images arrive)."""

    type: Literal["edge.done"] = "edge.done"
    edge: str
    images_released: int
    train_images: int
    val_images: int
    batches: int
    bytes_sent: int
    privacy: PrivacySummary


def parse_event(body: bytes) -> dict[str, Any]:
    """Decode an event body into a dict; raises ValueError on anything but a JSON object with a type."""
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("an event must be a JSON object with a string 'type'")
    return data

"""Every name on the wire: exchanges, queues, routing keys, message ids and object keys (DESIGN §4)."""

from __future__ import annotations

import re
from typing import Final

FEATURES_EXCHANGE: Final = "mistnet.features"
EVENTS_EXCHANGE: Final = "mistnet.events"
CONTROL_EXCHANGE: Final = "mistnet.control"
DEAD_LETTER_EXCHANGE: Final = "mistnet.dlx"

#: Job and edge names appear in routing keys, queue names, object keys and broker user names.
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if usable as a job or edge name, else raise saying what is allowed."""
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(
            f"{kind} name {value!r} is not allowed: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def features_queue(job: str) -> str:
    return f"mistnet.{job}.features"


def dead_queue(job: str) -> str:
    return f"mistnet.{job}.dead"


def features_routing_key(job: str, edge: str) -> str:
    return f"{job}.{edge}"


def event_routing_key(job: str, event_type: str) -> str:
    """E.g. ``demo.round.completed`` for event type ``round.completed``."""
    return f"{job}.{event_type}"


def control_routing_key(job: str, target: str = "all") -> str:
    """Cloud-to-edge messages: ``<job>.control.all`` or ``<job>.control.<edge>``."""
    return f"{job}.control.{target}"


def feature_message_id(job: str, edge: str, seq: int) -> str:
    """Deterministic id of feature batch ``seq``: a re-publish after a crash carries the same id."""
    return f"features:{job}:{edge}:{seq}"


def edge_prefix(job: str, edge: str) -> str:
    """Object-key prefix an edge may write under; the cloud refuses references outside it."""
    return f"{job}/features/{edge}/"


def feature_object_key(job: str, edge: str, sha256: str) -> str:
    """Content-addressed key of a feature payload."""
    return f"{edge_prefix(job, edge)}{sha256[:2]}/{sha256}.bin"


def model_prefix(job: str, round_no: int) -> str:
    return f"{job}/models/round-{round_no:04d}/"


def latest_model_key(job: str) -> str:
    return f"{job}/models/latest.json"


# --- FedAvg (aggregation_algorithm=fedavg) -------------------------------------------------------------


def control_queue(job: str, edge: str) -> str:
    """An edge's control inbox (declared by provisioning or the cloud; the edge may only read it)."""
    return f"mistnet.{job}.control.{edge}"


def start_round_message_id(job: str, round_no: int) -> str:
    """Deterministic id of round ``round_no``'s start-round: a re-publish after a restart has the same id."""
    return f"start-round:{job}:{round_no}"


def stop_message_id(job: str) -> str:
    return f"stop:{job}"


def update_message_id(job: str, edge: str, round_no: int) -> str:
    """Deterministic id of an edge's FedAvg update for one round."""
    return f"update:{job}:{edge}:{round_no}"


def global_model_prefix(job: str) -> str:
    """Where the cloud puts the global models edges start FedAvg rounds from."""
    return f"{job}/fedavg/global/"


def global_model_key(job: str, round_no: int) -> str:
    return f"{global_model_prefix(job)}round-{round_no:04d}/model.safetensors"


def update_prefix(job: str, edge: str) -> str:
    """Object-key prefix of an edge's FedAvg updates; the cloud refuses references outside it."""
    return f"{job}/updates/{edge}/"


def update_object_key(job: str, edge: str, round_no: int, sha256: str) -> str:
    """Content-addressed key of an edge's update for one round."""
    return f"{update_prefix(job, edge)}round-{round_no:04d}/{sha256}.safetensors"

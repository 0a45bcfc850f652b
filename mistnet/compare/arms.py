"""The arms of a comparison and what each measured, turned into per-round rows (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arm:
    """One way of training: ``centralized``, ``mistnet`` with a privacy mechanism and ε, or ``fedavg``."""

    kind: str
    mechanism: str = "none"
    epsilon: float | None = None

    @property
    def name(self) -> str:
        if self.kind != "mistnet":
            return self.kind
        return "mistnet ε=∞ (bits only)" if self.mechanism == "none" else f"mistnet {self.mechanism} ε={self.epsilon:g}"

    @property
    def slug(self) -> str:
        if self.kind != "mistnet":
            return self.kind
        return "mistnet-bits" if self.mechanism == "none" else f"mistnet-{self.mechanism}-{self.epsilon:g}"


def parse_arms(text: str) -> list[Arm]:
    """``centralized,mistnet:none,mistnet:rr-sym:8,fedavg`` -> arms; raises ValueError naming a bad item."""
    arms = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        bits = item.split(":")
        if bits[0] in ("centralized", "fedavg") and len(bits) == 1:
            arms.append(Arm(bits[0]))
        elif bits[0] == "mistnet" and len(bits) == 2 and bits[1] == "none":
            arms.append(Arm("mistnet", "none"))
        elif bits[0] == "mistnet" and len(bits) == 3 and bits[1] in ("rr-sym", "rr-opt"):
            arms.append(Arm("mistnet", bits[1], float(bits[2])))
        else:
            raise ValueError(f"arm {item!r} is not centralized, fedavg, mistnet:none or mistnet:<rr-sym|rr-opt>:<ε>")
    if not arms:
        raise ValueError("no arms given")
    return arms


@dataclass
class RoundRow:
    """One round of one arm: held-out accuracy, cost at the edges, wall time."""

    round: int
    map50: float | None
    map50_95: float | None
    seconds: float | None
    loss: float | None = None
    up_bytes: dict[str, int] = field(default_factory=dict)
    down_bytes: dict[str, int] = field(default_factory=dict)
    edge_seconds: dict[str, float] = field(default_factory=dict)
    edge_flops: dict[str, float] = field(default_factory=dict)


@dataclass
class ArmResult:
    """Everything measured for one arm."""

    arm: Arm
    rounds: list[RoundRow]
    privacy: dict[str, Any]
    edge_peak_rss: dict[str, int]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm.name,
            "kind": self.arm.kind,
            "privacy": self.privacy,
            "edge_peak_rss_bytes": self.edge_peak_rss,
            "wall_seconds": round(self.wall_seconds, 1),
            "notes": self.notes,
            "rounds": [vars(r) for r in self.rounds],
        }


def _metric(block: dict[str, Any] | None, key: str) -> float | None:
    return None if not block or block.get(key) is None else float(block[key])


def _loss(event: dict[str, Any]) -> float | None:
    losses = event.get("losses") or {}
    values = [losses.get(k) for k in ("box", "obj", "cls")]
    return None if any(v is None for v in values) else float(sum(float(v) for v in values if v is not None))


def mistnet_rows(events: list[dict[str, Any]], edge_cpu: dict[str, float], flops_per_image: float) -> list[RoundRow]:
    """MistNet: edges upload their features once (before round 1) and download nothing."""
    rounds = sorted((e for e in events if e.get("type") == "round.completed"), key=lambda e: int(e["round"]))
    done = {e["edge"]: e for e in events if e.get("type") == "edge.done"}
    rows = []
    if rounds:
        rows.append(
            RoundRow(
                0,
                _metric(rounds[0].get("baseline_public_val"), "map50"),
                _metric(rounds[0].get("baseline_public_val"), "map50_95"),
                None,
            )
        )
    for event in rounds:
        first = int(event["round"]) == 1
        rows.append(
            RoundRow(
                round=int(event["round"]),
                map50=_metric(event.get("public_val"), "map50"),
                map50_95=_metric(event.get("public_val"), "map50_95"),
                seconds=float(event["duration_s"]),
                loss=_loss(event),
                up_bytes={e: int(d["bytes_sent"]) if first else 0 for e, d in done.items()},
                down_bytes=dict.fromkeys(done, 0),
                edge_seconds={e: (edge_cpu.get(e, 0.0) if first else 0.0) for e in done},
                edge_flops={
                    e: (flops_per_image * int(d["images_released"]) if first else 0.0) for e, d in done.items()
                },
            )
        )
    return rows


def fedavg_rows(events: list[dict[str, Any]]) -> list[RoundRow]:
    """FedAvg: every round each edge downloads the global model, trains, uploads its update."""
    rounds = sorted((e for e in events if e.get("type") == "round.completed"), key=lambda e: int(e["round"]))
    rows = []
    for event in rounds:
        measured = event.get("edge_measurements") or {}
        rows.append(
            RoundRow(
                round=int(event["round"]),
                map50=_metric(event.get("public_val"), "map50"),
                map50_95=_metric(event.get("public_val"), "map50_95"),
                seconds=float(event["duration_s"]),
                loss=_loss(event),
                up_bytes={k: int(v) for k, v in (event.get("bytes_received_per_edge") or {}).items()},
                down_bytes={k: int(v) for k, v in (event.get("bytes_sent_down_per_edge") or {}).items()},
                edge_seconds={k: float(v.get("train_s", 0.0)) for k, v in measured.items()},
                edge_flops={k: float(v.get("flops", 0.0)) for k, v in measured.items()},
            )
        )
    return rows

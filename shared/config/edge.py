"""Settings of the edge producer daemon (`mistnet edge`): data, ledger, release and publishing knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator

from shared.config.base import ENV_PREFIX, CommonSettings, MiB, env
from shared.wire.names import check_name

#: RabbitMQ 4 refuses larger messages by default; an inline batch must stay below it.
MAX_INLINE_BYTES = 16 * MiB


class EdgeSettings(CommonSettings):
    """What one edge node needs on top of :class:`CommonSettings`."""

    edge: str = Field(
        validation_alias=env("edge"),
        description="This edge's name; routing key <job>.<edge>, object prefix and (by default) broker user.",
    )
    data: Path = Field(
        validation_alias=AliasChoices(f"{ENV_PREFIX}data".lower(), "train_dataset_url"),
        description="Images to release: a YOLO folder (images/ + labels/) or a .txt index (TRAIN_DATASET_URL).",
    )
    state_dir: Path = Field(
        Path("mistnet-state"),
        validation_alias=env("state_dir"),
        description="Folder of the privacy ledger and outbox (ledger.sqlite); keep it across restarts.",
    )
    inline_threshold_bytes: Annotated[int, Field(ge=0, le=MAX_INLINE_BYTES)] = Field(
        MiB,
        validation_alias=env("inline_threshold_bytes"),
        description="Messages below this size carry the bits inline; larger batches go to S3 (claim check).",
    )
    val_fraction: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        0.1,
        validation_alias=env("val_fraction"),
        description="Fraction of images (chosen by content digest) released as split=val.",
    )
    seed: Annotated[int, Field(ge=0)] | None = Field(
        None,
        validation_alias=env("seed"),
        description="Seed of the randomised response; unset = OS entropy (set only for tests/repro).",
    )
    once: bool = Field(
        False,
        validation_alias=env("once"),
        description="Exit 0 after the dataset is released and edge.done is published (default: keep watching).",
    )
    poll_interval_s: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = Field(
        10.0, validation_alias=env("poll_interval_s"), description="Seconds between scans for new images."
    )
    min_file_age_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = Field(
        2.0,
        validation_alias=env("min_file_age_s"),
        description="New images are taken once unchanged this long (files still being copied are left).",
    )
    on_bad_input: Literal["error", "skip"] = Field(
        "error",
        validation_alias=env("on_bad_input"),
        description="An unreadable image or malformed label: stop with an error, or skip it (logged, in the ledger).",
    )
    confirm_timeout_s: Annotated[float, Field(gt=0, le=600, allow_inf_nan=False)] = Field(
        30.0, validation_alias=env("confirm_timeout_s"), description="Seconds to wait for a publisher confirm."
    )
    publish_attempts: Annotated[int, Field(ge=1, le=100)] = Field(
        8,
        validation_alias=env("publish_attempts"),
        description="Tries per message (with back-off) before the daemon stops; the outbox keeps it.",
    )
    re_release: bool = Field(
        False,
        validation_alias=env("re_release"),
        description="Release images the ledger shows as released once more (their ε adds up in the ledger).",
    )
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        2, validation_alias=env("workers"), description="Image decoding threads."
    )
    extract_chunk: Annotated[int, Field(ge=1, le=4096)] = Field(
        1,
        validation_alias=env("extract_chunk"),
        description="Images decoded and run through the extractor at a time: memory follows it, not batch_size "
        "(on CPU 1-2 is also the fastest: activations stay in cache; a GPU wants more).",
    )
    extract_workers: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None,
        validation_alias=env("extract_workers"),
        description="Threads running the extractor, a chunk each (unset: one per CPU core, up to 8, each with "
        "cores/threads torch threads; 1 on a GPU).",
    )

    max_model_bytes: Annotated[int, Field(ge=1024)] = Field(
        1 << 30,
        validation_alias=env("max_model_bytes"),
        description="FedAvg: largest global model the edge downloads (checked before downloading).",
    )
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto",
        validation_alias=env("device"),
        description="Where the edge extracts (and, with FedAvg, fine-tunes): cpu, cuda, or auto (cuda if present).",
    )

    @field_validator("edge")
    @classmethod
    def _edge_name(cls, value: str) -> str:
        return check_name("edge", value)

    @field_validator("data", mode="before")
    @classmethod
    def _local_path(cls, value: object) -> object:
        """Sedna passes paths, sometimes as file:// URLs; other schemes cannot be read here."""
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            if parts.scheme != "file":
                raise ValueError(f"must be a local folder or .txt index (or file:// URL), not a {parts.scheme} URL")
            return parts.path
        return value

"""Local round checkpoints for resume: the published artifact plus the optimizer state, never pickled.

Layout: ``<store>/checkpoints/round-NNNN/{model.safetensors, manifest.json, optimizer.safetensors}``,
written into ``round-NNNN.partial/`` and renamed, so a folder without that suffix is complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from consumers.cloud.store import fsync_dir, write_durably
from shared.yolo.artifact import MANIFEST_FILE, WEIGHTS_FILE, LoadedModel, load_model

OPTIMIZER_FILE = "optimizer.safetensors"
_GROUPS_KEY = "mistnet.param_groups"
#: Checkpoints kept besides the newest (the one before it is enough to fall back by hand).
_KEEP = 2


@dataclass(frozen=True)
class Checkpoint:
    """A completed round's full model and optimizer state."""

    round: int
    model: LoadedModel
    optimizer: dict[str, Any]


def round_dir(checkpoints: Path, round_no: int) -> Path:
    return checkpoints / f"round-{round_no:04d}"


def optimizer_to_bytes(state: dict[str, Any]) -> bytes:
    """``optimizer.state_dict()`` as safetensors: tensors ``state.<param>.<name>``, groups as JSON metadata."""
    tensors = {
        f"state.{param}.{name}": value.detach().cpu().contiguous()
        for param, entries in state["state"].items()
        for name, value in entries.items()
        if isinstance(value, torch.Tensor)
    }
    blob: bytes = save_tensors(tensors, metadata={_GROUPS_KEY: json.dumps(state["param_groups"])})
    return blob


def optimizer_from_file(path: Path) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_bytes`."""
    with safe_open(str(path), framework="pt") as fh:
        groups = json.loads((fh.metadata() or {})[_GROUPS_KEY])
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
            _, param, name = key.split(".", 2)
            state.setdefault(int(param), {})[name] = fh.get_tensor(key)
    # JSON has no tuples; torch keeps e.g. Adam's betas as one.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def write_checkpoint(checkpoints: Path, round_no: int, files: dict[str, bytes]) -> Path:
    """Write ``files`` (name -> bytes) as round ``round_no``'s checkpoint, atomically; prune old ones."""
    final = round_dir(checkpoints, round_no)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, data in files.items():
        write_durably(partial / name, data)
    # A redone round (crash after writing, before committing) replaces its earlier checkpoint.
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    fsync_dir(checkpoints)
    _prune(checkpoints, round_no)
    return final


def read_checkpoint(checkpoints: Path, round_no: int) -> Checkpoint:
    folder = round_dir(checkpoints, round_no)
    for name in (WEIGHTS_FILE, MANIFEST_FILE, OPTIMIZER_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"checkpoint of round {round_no} is incomplete: {folder / name} is missing")
    return Checkpoint(round_no, load_model(folder), optimizer_from_file(folder / OPTIMIZER_FILE))


def _prune(checkpoints: Path, newest: int) -> None:
    for folder in checkpoints.glob("round-*"):
        stem = folder.name.removeprefix("round-").removesuffix(".partial")
        if stem.isdigit() and int(stem) <= newest - _KEEP:
            shutil.rmtree(folder, ignore_errors=True)

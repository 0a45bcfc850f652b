"""Our own model artifacts (safetensors + JSON manifest) and the one loader for every weight format.

An artifact is a folder with ``model.safetensors`` and ``manifest.json``; the manifest is also
embedded in the safetensors metadata, so the weights file alone is self-describing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from shared.yolo.network import YoloSegment, split_state
from shared.yolo.official import CheckpointError, load_official
from shared.yolo.table import build_arch, check_cut

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
_METADATA_KEY = "mistnet.manifest"


class Manifest(BaseModel):
    """What a deployed model is: architecture, classes, input size and which pipeline it expects."""

    model_config = ConfigDict(extra="allow")

    format: Literal["mistnet.model/1"] = "mistnet.model/1"
    arch: str
    nc: int
    names: list[str]
    img_size: int
    cut_layer: int | None = None
    encoding: Literal["none", "bits"] = "none"
    privacy: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    job: str | None = None
    round: int | None = None
    algorithm: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class LoadedModel:
    """Weights plus what is known about them."""

    state: dict[str, torch.Tensor]
    manifest: Manifest
    source: str

    def build(self) -> YoloSegment:
        """The full model with these weights, in eval mode."""
        model = YoloSegment(build_arch(self.manifest.arch, self.manifest.nc))
        model.load_state_dict(self.state)
        return model.eval()


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Digest of a state dict independent of file format: names, dtypes, shapes and bytes in key order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def extractor_sha256(state: dict[str, torch.Tensor], cut_layer: int) -> str:
    """Digest of the edge part ``[0, cut)`` of a full state dict: both sides must agree on it."""
    return state_sha256(split_state(state, 0, cut_layer))


def serialize_artifact(state: dict[str, torch.Tensor], manifest: Manifest) -> tuple[bytes, bytes]:
    """``(safetensors bytes, manifest JSON bytes)``; the manifest records the weights' sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    manifest = manifest.model_copy(update={"weights_sha256": state_sha256(tensors)})
    manifest_json = manifest.model_dump_json(indent=2).encode()
    blob = save_tensors(tensors, metadata={_METADATA_KEY: manifest_json.decode()})
    return blob, manifest_json


def save_artifact(folder: Path, state: dict[str, torch.Tensor], manifest: Manifest) -> Path:
    """Write the artifact into ``folder`` atomically (temp file + rename); returns the weights path."""
    folder.mkdir(parents=True, exist_ok=True)
    blob, manifest_json = serialize_artifact(state, manifest)
    for name, data in ((WEIGHTS_FILE, blob), (MANIFEST_FILE, manifest_json)):
        tmp = folder / f".{name}.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(folder / name)
    return folder / WEIGHTS_FILE


def load_artifact_bytes(blob: bytes, source: str) -> LoadedModel:
    """Parse safetensors bytes carrying our embedded manifest."""
    from safetensors.torch import load as load_tensors

    state = load_tensors(blob)
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    meta = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if meta is None:
        raise CheckpointError(f"{source}: safetensors file without a mistnet manifest")
    return _checked(LoadedModel(state, Manifest.model_validate_json(meta), source))


def _checked(model: LoadedModel) -> LoadedModel:
    m = model.manifest
    arch = build_arch(m.arch, m.nc)
    if m.cut_layer is not None:
        check_cut(arch, m.cut_layer)
    if len(m.names) != m.nc:
        raise CheckpointError(f"{model.source}: manifest lists {len(m.names)} class names for nc={m.nc}")
    if m.weights_sha256 and state_sha256(model.state) != m.weights_sha256:
        raise CheckpointError(f"{model.source}: weights do not match the sha256 in the manifest")
    return model


def load_model(path: Path | str, img_size: int = 640) -> LoadedModel:
    """Load an official ``.pt`` checkpoint, our ``.safetensors`` file, or an artifact folder.

    Official checkpoints carry no manifest: one is made for the full pipeline at ``img_size``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(
            f"weights file {path} does not exist; give a .pt checkpoint, a .safetensors file or a model artifact folder"
        )
    if path.suffix == ".safetensors":
        sidecar = path.with_name(MANIFEST_FILE)
        with safe_open(str(path), framework="pt") as fh:
            meta = (fh.metadata() or {}).get(_METADATA_KEY)
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
        if meta is None and sidecar.is_file():
            meta = sidecar.read_text()
        if meta is None:
            raise CheckpointError(f"{path}: no mistnet manifest in the file or beside it ({sidecar})")
        return _checked(LoadedModel(state, Manifest.model_validate_json(meta), str(path)))
    official = load_official(path)
    manifest = Manifest(arch=official.arch, nc=official.nc, names=official.names, img_size=img_size)
    return LoadedModel(official.state, manifest, str(path))

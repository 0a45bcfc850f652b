"""Publishing a round's model: the artifact under ``<job>/models/round-NNNN/``, the latest pointer, MODEL_URL.

``latest.json`` is ``{round, uri, sha256, manifest_uri}`` with the sha256 of the safetensors file's
bytes, written only after both files of the round are stored, so it never points at a partial model.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from consumers.cloud.store import write_durably
from shared.blob.store import BlobStore
from shared.wire import names
from shared.wire.events import ModelRef
from shared.wire.features import sha256_hex
from shared.yolo.artifact import MANIFEST_FILE, WEIGHTS_FILE

JSON = "application/json"
SAFETENSORS = "application/octet-stream"


@dataclass(frozen=True)
class ModelUrl:
    """Where Sedna's MODEL_URL wants the latest model: a local ``path`` or an object ``key`` in our bucket.

    Either names a folder (gets ``model.safetensors`` + ``manifest.json``) or a ``.safetensors`` file
    (the manifest goes beside it).
    """

    path: Path | None = None
    key: str | None = None


def parse_model_url(url: str, bucket: str) -> ModelUrl:
    """A local path, ``file:///path`` or ``s3://<our bucket>/key``; anything else is refused, naming the rule."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return ModelUrl(path=Path(parts.path if parts.scheme else url))
    if parts.scheme == "s3" and parts.netloc == bucket and parts.path.strip("/"):
        return ModelUrl(key=parts.path.strip("/"))
    raise ValueError(f"MODEL_URL {url!r} must be a local path, file:///path or s3://{bucket}/KEY (the job's bucket)")


def _targets(url: ModelUrl) -> tuple[str, str]:
    """(weights, manifest) destinations of ``url``."""
    base = str(url.path) if url.path is not None else str(url.key)
    if base.endswith(".safetensors"):
        return base, posixpath.join(posixpath.dirname(base), MANIFEST_FILE)
    return posixpath.join(base, WEIGHTS_FILE), posixpath.join(base, MANIFEST_FILE)


async def publish_artifact(store: BlobStore, job: str, round_no: int, weights: bytes, manifest: bytes) -> ModelRef:
    """Upload round ``round_no``'s artifact, then point ``latest.json`` at it; returns its uri and sha256."""
    prefix = names.model_prefix(job, round_no)
    uri = await store.put(prefix + WEIGHTS_FILE, weights, SAFETENSORS)
    manifest_uri = await store.put(prefix + MANIFEST_FILE, manifest, JSON)
    ref = ModelRef(uri=uri, sha256=sha256_hex(weights))
    pointer = {"round": round_no, "uri": ref.uri, "sha256": ref.sha256, "manifest_uri": manifest_uri}
    await store.put(names.latest_model_key(job), json.dumps(pointer).encode(), JSON)
    return ref


def model_ref(store: BlobStore, job: str, round_no: int, weights: bytes) -> ModelRef:
    """Where :func:`publish_artifact` puts the model, known before uploading (events are built first)."""
    return ModelRef(uri=store.uri(names.model_prefix(job, round_no) + WEIGHTS_FILE), sha256=sha256_hex(weights))


async def copy_to_model_url(url: ModelUrl, store: BlobStore, weights: bytes, manifest: bytes) -> str:
    """Write the latest model where MODEL_URL says; returns where it went."""
    weights_at, manifest_at = _targets(url)
    if url.key is not None:
        await store.put(weights_at, weights, SAFETENSORS)
        await store.put(manifest_at, manifest, JSON)
        return store.uri(weights_at)
    for target, data in ((Path(weights_at), weights), (Path(manifest_at), manifest)):
        await asyncio.to_thread(write_durably, target, data)
    return weights_at

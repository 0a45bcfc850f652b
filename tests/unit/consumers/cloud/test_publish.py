"""Where a round's model goes: the S3 layout, the latest pointer, and Sedna's MODEL_URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers.cloud.publish import ModelUrl, copy_to_model_url, model_ref, parse_model_url, publish_artifact
from shared.blob.store import FileBlobStore
from shared.wire.features import sha256_hex


class TestModelUrl:
    """MODEL_URL is a local path, a file URL, or a key in the job's bucket."""

    def test_parse(self) -> None:
        assert parse_model_url("/models/m", "b") == ModelUrl(path=Path("/models/m"))
        assert parse_model_url("file:///models/m.safetensors", "b") == ModelUrl(path=Path("/models/m.safetensors"))
        assert parse_model_url("s3://b/models/m", "b") == ModelUrl(key="models/m")
        with pytest.raises(ValueError, match="job's bucket"):
            parse_model_url("s3://other/models/m", "b")
        with pytest.raises(ValueError, match="MODEL_URL"):
            parse_model_url("http://host/m", "b")


class TestPublish:
    """The artifact lands under round-NNNN, then latest points at it with the file's sha256."""

    async def test_layout(self, tmp_path: Path) -> None:
        blobs = FileBlobStore(tmp_path, "bucket")
        ref = await publish_artifact(blobs, "job", 3, b"weights", b"{}")
        assert ref == model_ref(blobs, "job", 3, b"weights")
        assert ref.uri == "s3://bucket/job/models/round-0003/model.safetensors"
        assert (tmp_path / "bucket/job/models/round-0003/manifest.json").read_bytes() == b"{}"
        latest = json.loads((tmp_path / "bucket/job/models/latest.json").read_text())
        assert latest == {
            "round": 3,
            "uri": ref.uri,
            "sha256": sha256_hex(b"weights"),
            "manifest_uri": "s3://bucket/job/models/round-0003/manifest.json",
        }

    async def test_model_url_targets(self, tmp_path: Path) -> None:
        blobs = FileBlobStore(tmp_path / "s3", "bucket")
        await copy_to_model_url(ModelUrl(path=tmp_path / "dir"), blobs, b"w", b"m")
        assert (tmp_path / "dir/model.safetensors").read_bytes() == b"w"
        assert (tmp_path / "dir/manifest.json").read_bytes() == b"m"
        await copy_to_model_url(ModelUrl(path=tmp_path / "file/best.safetensors"), blobs, b"w2", b"m2")
        assert (tmp_path / "file/best.safetensors").read_bytes() == b"w2"
        assert (tmp_path / "file/manifest.json").read_bytes() == b"m2"
        where = await copy_to_model_url(ModelUrl(key="sedna/model"), blobs, b"w3", b"m3")
        assert where == "s3://bucket/sedna/model/model.safetensors"
        assert (tmp_path / "s3/bucket/sedna/model/manifest.json").read_bytes() == b"m3"

"""Official checkpoints load without executing pickled code; our artifacts round-trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from shared.yolo.artifact import Manifest, load_model, save_artifact, serialize_artifact, state_sha256
from shared.yolo.official import CheckpointError, load_official
from shared.yolo.table import build_arch


class _Hostile:
    """Pickles to a call of os.system: loading it must not run the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class TestOfficialCheckpoint:
    """yolov5n.pt loads into our model with every tensor of the checkpoint."""

    def test_loads_yolov5n(self, yolov5n_pt: Path) -> None:
        ckpt = load_official(yolov5n_pt)
        assert (ckpt.arch, ckpt.nc, ckpt.names[0], ckpt.names[79]) == ("yolov5n", 80, "person", "toothbrush")
        assert all(t.dtype in (torch.float32, torch.int64) for t in ckpt.state.values())
        model = load_model(yolov5n_pt).build()
        assert torch.equal(model.state_dict()["model.24.anchors"], ckpt.state["model.24.anchors"])
        plain = torch.load(yolov5n_pt.with_name("yolov5n_state_dict.pt"), weights_only=True)
        assert all(torch.equal(plain[k], ckpt.state[k]) for k in plain)

    def test_hostile_pickle_is_refused_without_running(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        path = tmp_path / "evil.pt"
        torch.save({"model": _Hostile(marker)}, path)
        with pytest.raises(CheckpointError, match="without executing code"):
            load_official(path)
        assert not marker.exists()

    def test_not_a_checkpoint(self, tmp_path: Path) -> None:
        path = tmp_path / "x.pt"
        path.write_bytes(b"not a zip")
        with pytest.raises(CheckpointError):
            load_official(path)


class TestArtifact:
    """safetensors + manifest: self-describing, digest-checked, loadable from a folder or the file."""

    def _state(self) -> dict[str, torch.Tensor]:
        from shared.yolo.network import YoloSegment

        torch.manual_seed(1)
        return YoloSegment(build_arch("yolov5n", nc=3)).state_dict()

    def test_round_trip(self, tmp_path: Path) -> None:
        state = self._state()
        manifest = Manifest(arch="yolov5n", nc=3, names=["a", "b", "c"], img_size=128, cut_layer=4, encoding="bits")
        weights = save_artifact(tmp_path / "art", state, manifest)
        for where in (tmp_path / "art", weights):
            loaded = load_model(where)
            assert loaded.manifest.cut_layer == 4 and loaded.manifest.encoding == "bits"
            assert loaded.manifest.weights_sha256 == state_sha256(state)
            assert all(torch.equal(loaded.state[k], state[k]) for k in state)
        (tmp_path / "art" / "manifest.json").unlink()
        assert load_model(weights).manifest.names == ["a", "b", "c"]  # embedded copy

    def test_tampered_weights_are_refused(self, tmp_path: Path) -> None:
        state = self._state()
        manifest = Manifest(arch="yolov5n", nc=3, names=["a", "b", "c"], img_size=128)
        blob, _ = serialize_artifact(state, manifest)
        state["model.24.m.0.bias"] = state["model.24.m.0.bias"] + 1
        other, _ = serialize_artifact(state, manifest)
        # Splice the first file's manifest (and digest) onto the second file's tensors.
        header_len = int.from_bytes(blob[:8], "little")
        other_len = int.from_bytes(other[:8], "little")
        assert header_len == other_len
        tampered = blob[: 8 + header_len] + other[8 + other_len :]
        path = tmp_path / "model.safetensors"
        path.write_bytes(tampered)
        with pytest.raises(CheckpointError, match="do not match the sha256"):
            load_model(path)

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(CheckpointError, match="does not exist"):
            load_model(tmp_path / "nope.pt")

"""The job's model: pretrained weights split at the cut, the spec edges must match, and full-model assembly."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from shared.wire.features import ModelSpec
from shared.yolo.artifact import LoadedModel, extractor_sha256
from shared.yolo.network import YoloSegment, split_state
from shared.yolo.table import ArchSpec, build_arch, check_cut, feature_shape


@dataclass(frozen=True)
class JobModel:
    """Pretrained full ``state`` (float32, CPU) of ``arch``; the edge part ``[0, cut)`` never changes."""

    arch: ArchSpec
    names: list[str]
    state: dict[str, torch.Tensor]
    cut_layer: int
    img_size: int

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, cut_layer: int, img_size: int) -> JobModel:
        arch = build_arch(loaded.manifest.arch, loaded.manifest.nc)
        check_cut(arch, cut_layer)
        return cls(arch, list(loaded.manifest.names), loaded.state, cut_layer, img_size)

    @cached_property
    def spec(self) -> ModelSpec:
        """What every feature batch must declare: the edges run exactly this extractor."""
        return ModelSpec(
            arch=self.arch.name,
            cut_layer=self.cut_layer,
            img_size=self.img_size,
            extractor_sha256=extractor_sha256(self.state, self.cut_layer),
        )

    @property
    def feature_chw(self) -> tuple[int, int, int]:
        return feature_shape(self.arch, self.cut_layer, self.img_size)

    def cloud_part(self) -> YoloSegment:
        """Rows ``[cut, end]`` initialised from the pretrained weights."""
        cloud = YoloSegment(self.arch, self.cut_layer)
        cloud.load_state_dict(split_state(self.state, self.cut_layer, self.arch.num_layers))
        return cloud

    def full_state(self, cloud_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pretrained edge part plus ``cloud_state`` (keys ``model.<i>.…`` with ``i >= cut``), on the CPU."""
        edge = split_state(self.state, 0, self.cut_layer)
        return {**edge, **{k: v.detach().cpu() for k, v in cloud_state.items()}}

    def full_model(self, cloud_state: dict[str, torch.Tensor]) -> YoloSegment:
        """The deployable model in eval mode."""
        model = YoloSegment(self.arch)
        model.load_state_dict(self.full_state(cloud_state))
        return model.eval()

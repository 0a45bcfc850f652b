"""The job's model: pretrained weights split at the cut, the spec edges must match, and full-model assembly."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from shared.wire.features import ModelSpec
from shared.yolo.artifact import LoadedModel, extractor_sha256
from shared.yolo.blocks import C3, SPPF, Conv
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


@contextlib.contextmanager
def _stats_frozen(block: nn.Module) -> Iterator[None]:
    """While a block is recomputed: BatchNorm uses batch statistics as before but leaves its running ones alone.

    Momentum 0 keeps ``running = (1 - 0)·running + 0·batch`` exactly; the batch counter is put back.
    """
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if count is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)


def _contexts(
    block: nn.Module,
) -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
    """(around the first forward, around the recomputation)."""
    return contextlib.nullcontext(), _stats_frozen(block)


class _Recomputed(nn.Module):
    """Keeps only the block's input for the backward pass and runs the block again there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = checkpoint(super().forward, x, use_reentrant=False, context_fn=partial(_contexts, self))
        return out


class _RecomputedC3(_Recomputed, C3):
    pass


class _RecomputedSPPF(_Recomputed, SPPF):
    pass


class _RecomputedConv(_Recomputed, Conv):
    pass


_RECOMPUTED: dict[type[nn.Module], type[nn.Module]] = {
    C3: _RecomputedC3,
    SPPF: _RecomputedSPPF,
    Conv: _RecomputedConv,
}


def recompute_in_backward(segment: YoloSegment) -> YoloSegment:
    """Activation checkpointing of the segment's C3, SPPF and Conv rows (in place; returns it).

    Only the rows themselves, not blocks nested in them: each keeps just its input for the backward
    pass and runs once more there. Training then holds about a third of the activations (yolov5s at
    640, batch 32: a 3.5 GB smaller peak on a CPU) for roughly one more forward pass. Losses, gradients
    and BatchNorm buffers are bit-identical to training without it; weights and state dict unchanged.
    """
    for block in segment.model.values():
        recomputed = _RECOMPUTED.get(type(block))
        if recomputed is not None:
            block.__class__ = recomputed
    return segment

"""The attacker's model: a convolutional decoder from released cut-layer features back to images, and its training.

The architecture is the usual feature-inversion decoder: a 3x3 stem at feature resolution, then per
factor of 2 of the extractor's stride a nearest-neighbour upsample followed by two 3x3 conv + BatchNorm
+ SiLU blocks (channels halve each stage, never below ``min_width``), and a 3x3 conv to RGB with a sigmoid.
Tensors are kept channels-last: oneDNN's CPU convolutions run about 1.5x faster on that layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mistnet.audit.metrics import ssim

Loss = Literal["mse", "l1", "mse+ssim"]


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class InversionDecoder(nn.Module):
    """``(N, C, H, W)`` features -> ``(N, 3, H·2^k, W·2^k)`` images in [0, 1], ``k = upsample_stages``."""

    def __init__(self, in_channels: int, upsample_stages: int, width: int = 128, min_width: int = 16):
        super().__init__()
        layers: list[nn.Module] = [_conv_block(in_channels, width), _conv_block(width, width)]
        channels = width
        for _ in range(upsample_stages):
            out = max(channels // 2, min_width)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv_block(channels, out), _conv_block(out, out)]
            channels = out
        layers += [nn.Conv2d(channels, 3, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)

    def reset_parameters(self, generator: torch.Generator) -> InversionDecoder:
        """Re-draw every weight from ``generator`` (torch's default init, made reproducible without global seeds)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    bound = 1 / math.sqrt(module.weight[0].numel())
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.body(features)
        return out


def build_decoder(
    feature_shape: tuple[int, int, int], img_size: int, generator: torch.Generator, width: int = 128
) -> InversionDecoder:
    """A decoder for ``(C, H, W)`` features of square ``img_size`` images, initialised from ``generator``."""
    channels, side, _ = feature_shape
    stages = round(math.log2(img_size / side))
    if side * 2**stages != img_size:
        raise ValueError(f"img_size {img_size} is not a power-of-two multiple of the feature side {side}")
    decoder = InversionDecoder(channels, stages, width).reset_parameters(generator)
    return decoder.to(memory_format=torch.channels_last)


@dataclass(frozen=True)
class TrainRecipe:
    """How the attacker trains: Adam with cosine-decayed learning rate over ``epochs`` passes."""

    epochs: int = 20
    batch_size: int = 16
    lr: float = 2e-3
    loss: Loss = "mse"


def _loss(name: Loss, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(out, target)
    if name == "l1":
        return F.l1_loss(out, target)
    return F.mse_loss(out, target) + 0.5 * (1 - ssim(out, target).mean())


def train_decoder(
    decoder: InversionDecoder,
    make_features: Callable[[], torch.Tensor],
    images: torch.Tensor,
    recipe: TrainRecipe,
    generator: torch.Generator,
) -> list[float]:
    """Fit ``decoder`` to map ``make_features()`` back to ``images`` ``(N, 3, S, S)``; mean loss per epoch.

    ``make_features`` is called once per epoch and returns ``(N, C, H, W)`` features of ``images`` in
    order, so a randomised setting gets fresh noise every epoch (the attacker can re-randomise at will).
    The batch order is drawn from ``generator``.
    """
    if recipe.epochs < 0 or recipe.batch_size < 1 or recipe.lr <= 0:
        raise ValueError(f"training recipe {recipe} needs epochs >= 0, batch_size >= 1 and lr > 0")
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, recipe.epochs * steps_per_epoch))
    history: list[float] = []
    decoder.train()
    for _ in range(recipe.epochs):
        features = make_features().contiguous(memory_format=torch.channels_last)
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(images), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            loss = _loss(recipe.loss, decoder(features[index]), images[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        history.append(total / len(images))
    decoder.eval()
    return history


@torch.no_grad()
def reconstruct(decoder: InversionDecoder, features: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``(N, C, H, W)`` released features -> ``(N, 3, S, S)`` reconstructions in [0, 1] (eval mode)."""
    decoder.eval()
    features = features.contiguous(memory_format=torch.channels_last)
    out = [decoder(features[s : s + batch_size]) for s in range(0, len(features), batch_size)]
    return torch.cat(out).contiguous()

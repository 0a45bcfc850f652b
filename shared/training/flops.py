"""A compute estimate for reports: convolution multiply-accumulates counted with forward hooks."""

from __future__ import annotations

import torch
from torch import nn

#: Training ≈ forward + backward ≈ 3 forwards; one multiply-accumulate = 2 floating-point operations.
TRAIN_FORWARDS = 3
FLOPS_PER_MAC = 2


def conv_macs_per_image(model: nn.Module, img_size: int) -> int:
    """Multiply-accumulates of every ``Conv2d`` in one forward pass of a ``(1, 3, img_size, img_size)`` input.

    Convolutions dominate YOLOv5's cost; activations, BatchNorm and the upsampling are left out.
    Runs on a zero image in eval mode and restores the model's mode.
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        total += output[0].numel() * per_output

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 3, img_size, img_size, device=device))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total


def training_flops(macs_per_image: int, images: int) -> float:
    """Estimated FLOPs of training on ``images`` image passes (epochs included): 2·3·MACs each."""
    return float(FLOPS_PER_MAC * TRAIN_FORWARDS * macs_per_image * images)

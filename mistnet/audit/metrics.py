"""How close a reconstruction is to the original: SSIM (Wang et al. 2004) and PSNR on images in [0, 1].

SSIM is the standard Gaussian-window index: an 11x11 window of σ 1.5 (normalised to sum 1), K1 0.01,
K2 0.03, data range 1, statistics over the window positions that fit inside the image ("valid", as in
the authors' reference code, no padding). Colour images are scored per RGB channel and the SSIM maps
are averaged over channels and positions (as scikit-image's ``channel_axis`` and pytorch-msssim do).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 1.0
#: PSNR of an exact (or closer than 1e-10 MSE) reconstruction; a cap keeps reports finite and JSON-valid.
PSNR_CAP_DB = 100.0


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """``(size,) float64`` samples of a Gaussian centred on the middle tap, summing to 1."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filter of every channel of ``(N, C, H, W)``."""
    channels = x.shape[1]
    rows = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Local SSIM of ``(N, C, H, W)`` images in [0, 1] -> ``(N, C, H-10, W-10)`` (differentiable)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"SSIM needs two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(x.shape[-2:])}")
    taps = gaussian_window().to(dtype=x.dtype, device=x.device)
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _blur(x, taps), _blur(y, taps)
    var_x = _blur(x * x, taps) - mu_x**2
    var_y = _blur(y * y, taps) - mu_y**2
    cov_xy = _blur(x * y, taps) - mu_x * mu_y
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    return luminance * structure


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` SSIM per image, averaged over channels and window positions; 1 for identical images."""
    return ssim_map(x, y).mean(dim=(1, 2, 3))


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` PSNR in dB per image, 10·log10(1 / MSE) for data range 1, capped at PSNR_CAP_DB."""
    if x.shape != y.shape:
        raise ValueError(f"PSNR needs tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(dim=1)
    floor = DATA_RANGE**2 * 10 ** (-PSNR_CAP_DB / 10)
    return 10 * torch.log10(DATA_RANGE**2 / mse.clamp_min(floor))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for a single value); NaN for none."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

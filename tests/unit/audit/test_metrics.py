"""SSIM and PSNR on images in [0, 1]."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mistnet.audit.metrics import PSNR_CAP_DB, SSIM_K1, gaussian_window, mean_std, psnr, ssim, ssim_map


def _images(n: int = 2, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth random images: noise blurred so that they have structure at the SSIM window's scale."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g, dtype=torch.float64)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


class TestGaussianWindow:
    """The window has 11 taps, sums to 1, is symmetric and peaks in the middle."""

    def test_shape(self) -> None:
        taps = gaussian_window()
        assert taps.shape == (11,)
        assert float(taps.sum()) == pytest.approx(1.0)
        assert torch.allclose(taps, taps.flip(0))
        assert int(taps.argmax()) == 5
        assert float(taps[5] / taps[6]) == pytest.approx(math.exp(1 / (2 * 1.5**2)))


class TestSsim:
    """SSIM is 1 for identical images, low for unrelated ones, falls with noise and matches closed forms."""

    def test_identical_is_one(self) -> None:
        x = _images()
        assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))

    def test_inverse_and_noise_are_low(self) -> None:
        x = _images()
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert (ssim(x, 1 - x) < 0).all()  # structure anti-correlated everywhere
        assert (ssim(x, noise) < 0.1).all()

    def test_decreases_as_noise_grows(self) -> None:
        x = _images(1)
        g = torch.Generator().manual_seed(2)
        base = torch.randn(x.shape, generator=g, dtype=torch.float64)
        scores = [float(ssim(x, (x + sigma * base).clamp(0, 1))[0]) for sigma in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)]
        assert scores[0] == pytest.approx(1.0)
        assert all(a > b for a, b in itertools.pairwise(scores)), scores

    def test_constant_images_follow_the_luminance_term(self) -> None:
        # No variance: SSIM reduces to (2ab + C1) / (a² + b² + C1) everywhere.
        a, b = 0.2, 0.7
        x, y = torch.full((1, 1, 16, 16), a, dtype=torch.float64), torch.full((1, 1, 16, 16), b, dtype=torch.float64)
        c1 = SSIM_K1**2
        assert float(ssim(x, y)[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))

    def test_valid_map_and_symmetry(self) -> None:
        x, y = _images(1, 32, 3), _images(1, 32, 4)
        assert ssim_map(x, y).shape == (1, 3, 22, 22)
        assert torch.allclose(ssim(x, y), ssim(y, x))

    def test_refuses_images_smaller_than_the_window(self) -> None:
        with pytest.raises(ValueError, match="at least 11x11"):
            ssim(torch.zeros(1, 3, 10, 40), torch.zeros(1, 3, 10, 40))


class TestPsnr:
    """PSNR is 10·log10(1 / MSE), capped for identical images."""

    def test_identical_is_capped(self) -> None:
        x = _images()
        assert torch.equal(psnr(x, x), torch.full((2,), PSNR_CAP_DB, dtype=torch.float64))

    def test_known_mse(self) -> None:
        x = torch.full((2, 3, 8, 8), 0.5)
        y = x + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 1e-2 and 1e-4
        assert psnr(x, y).tolist() == pytest.approx([20.0, 40.0], abs=1e-4)


class TestMeanStd:
    """Population mean and standard deviation."""

    def test_values(self) -> None:
        assert mean_std([1.0, 3.0]) == (2.0, 1.0)
        assert mean_std([5.0]) == (5.0, 0.0)
        assert all(math.isnan(v) for v in mean_std([]))

"""The attacker's decoder: shapes, seeded initialisation and training that learns an invertible mapping."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mistnet.audit.decoder import Loss, TrainRecipe, build_decoder, reconstruct, train_decoder


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _features(images: torch.Tensor) -> torch.Tensor:
    """A known stride-4 'extractor': 4x4 average pooling, channels repeated to 8."""
    return F.avg_pool2d(images, 4).repeat(1, 3, 1, 1)[:, :8]


class TestBuildDecoder:
    """The decoder upsamples features to the image size, identically for one seed."""

    def test_shapes_and_range(self) -> None:
        decoder = build_decoder((8, 8, 8), 32, torch.Generator().manual_seed(0), width=16)
        out = reconstruct(decoder, torch.rand(3, 8, 8, 8))
        assert out.shape == (3, 3, 32, 32)
        assert out.min() >= 0 and out.max() <= 1

    def test_seeded(self) -> None:
        a, b, c = (build_decoder((8, 8, 8), 32, torch.Generator().manual_seed(s), width=16) for s in (0, 0, 1))
        weights = [torch.cat([p.flatten() for p in d.parameters()]) for d in (a, b, c)]
        assert torch.equal(weights[0], weights[1])
        assert not torch.equal(weights[0], weights[2])

    def test_refuses_a_size_that_is_not_a_power_of_two_multiple(self) -> None:
        with pytest.raises(ValueError, match="power-of-two multiple"):
            build_decoder((8, 8, 8), 48, torch.Generator().manual_seed(0))


class TestTrainDecoder:
    """Training lowers the loss, is reproducible, and beats the untrained decoder on held-out images."""

    def _fit(self, seed: int, epochs: int = 15, loss: Loss = "mse") -> tuple[list[float], float, float]:
        train, test = _smooth_images(32, 32, 10), _smooth_images(8, 32, 11)
        decoder = build_decoder((8, 8, 8), 32, torch.Generator().manual_seed(seed), width=32)
        before = F.mse_loss(reconstruct(decoder, _features(test)), test).item()
        history = train_decoder(
            decoder,
            lambda: _features(train),
            train,
            TrainRecipe(epochs, 8, 3e-3, loss),
            torch.Generator().manual_seed(seed),
        )
        after = F.mse_loss(reconstruct(decoder, _features(test)), test).item()
        return history, before, after

    def test_learns_and_generalises(self) -> None:
        history, before, after = self._fit(0)
        assert len(history) == 15
        assert history[-1] < 0.5 * history[0]
        assert after < 0.5 * before

    @pytest.mark.parametrize("loss", ["l1", "mse+ssim"])
    def test_other_objectives_learn(self, loss: Loss) -> None:
        history, before, after = self._fit(0, epochs=4, loss=loss)
        assert history[-1] < history[0] and after < before

    def test_reproducible(self) -> None:
        assert self._fit(3, epochs=2)[0] == self._fit(3, epochs=2)[0]

    def test_zero_epochs_leaves_it_untrained(self) -> None:
        decoder = build_decoder((8, 8, 8), 32, torch.Generator().manual_seed(0), width=16)
        before = [p.clone() for p in decoder.parameters()]
        images = _smooth_images(4, 32, 0)
        history = train_decoder(decoder, lambda: _features(images), images, TrainRecipe(epochs=0), torch.Generator())
        assert history == [] and all(torch.equal(a, b) for a, b in zip(before, decoder.parameters(), strict=True))

"""``run_audit``: extract the cut-layer activations of COCO-style images once, then per setting train the
attacker's decoder on attacker-owned images and score its reconstructions of the victims' released features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from mistnet.audit.decoder import TrainRecipe, build_decoder, reconstruct, train_decoder
from mistnet.audit.grid import write_grid
from mistnet.audit.metrics import SSIM_WINDOW, mean_std, psnr, ssim
from mistnet.audit.release import FLOAT_CEILING, Setting, release, setting_label
from mistnet.audit.report import UNRECOGNISABLE_SSIM, AuditReport, SettingResult
from shared.dataset.letterbox import Letterbox
from shared.dataset.loader import iter_batches
from shared.dataset.sources import discover
from shared.privacy import Mechanism, PrivacyParams, privacy_params
from shared.yolo.artifact import load_model
from shared.yolo.network import EdgeExtractor, split_state
from shared.yolo.table import build_arch, feature_shape

logger = logging.getLogger(__name__)

SSIM_VARIANT = "Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, range 1, valid positions, mean of the RGB channels"
METRIC_REGION = "each victim's letterboxed content (the grey padding, trivial to reconstruct, is cropped off)"
GRID_FILE = "reconstructions.png"
THREAT_MODEL = [
    "Attacker: knows the extractor weights, the cut and the mechanism, owns public images disjoint from the "
    "victims', and sees each victim image's released features once.",
    "The attacker's training features are re-randomised every epoch (fresh noise at the same ε), with mirror "
    "images as augmentation; one decoder per setting, same initialisation and batch order for all settings.",
    "Labels and boxes travel in clear and are not attacked here.",
]
_DEFAULT_SETTINGS = (
    privacy_params(Mechanism.NONE, None),
    privacy_params(Mechanism.RR_SYM, 8.0),
    privacy_params(Mechanism.RR_SYM, 4.0),
)


@dataclass(frozen=True)
class AuditConfig:
    """One audit: which extractor and images, which settings, how the attacker trains, where examples go."""

    weights: Path
    data: Path
    img_size: int = 128
    cut_layer: int = 4
    settings: tuple[PrivacyParams, ...] = _DEFAULT_SETTINGS
    float_ceiling: bool = True
    attacker_fraction: float = 0.75
    limit: int | None = None  # first N images of ``data`` only (tests, quick looks)
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    decoder_width: int = 128
    seed: int = 0
    out: Path | None = None
    examples: int = 6  # victim rows in the grid


@dataclass(frozen=True)
class _Split:
    attacker_images: torch.Tensor  # (2·A, 3, S, S): the attacker's images and their mirror images
    attacker_acts: torch.Tensor  # (2·A, C, H, W) float activations of row cut-1
    victim_images: torch.Tensor  # (V, 3, S, S)
    victim_acts: torch.Tensor  # (V, C, H, W)
    victim_regions: list[tuple[int, int, int, int]]  # (top, bottom, left, right) of each victim's content


def content_region(box: Letterbox) -> tuple[int, int, int, int]:
    """Rows ``[top, bottom)`` and columns ``[left, right)`` holding image pixels, not letterbox grey.

    Grown back to the whole image along a side shorter than the SSIM window.
    """
    (pad_w, pad_h), (height, width) = box.pad, box.shape
    top, bottom = round(pad_h - 0.1), height - round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), width - round(pad_w + 0.1)
    if bottom - top < SSIM_WINDOW:
        top, bottom = 0, height
    if right - left < SSIM_WINDOW:
        left, right = 0, width
    return top, bottom, left, right


def score(
    recon: torch.Tensor, images: torch.Tensor, regions: list[tuple[int, int, int, int]]
) -> tuple[list[float], list[float]]:
    """Per-image SSIM and PSNR (dB) of ``(N, 3, S, S)`` reconstructions against originals, on each region."""
    ssims, psnrs = [], []
    for rec, img, (top, bottom, left, right) in zip(recon, images, regions, strict=True):
        a = rec[None, :, top:bottom, left:right].double()
        b = img[None, :, top:bottom, left:right].double()
        ssims.append(float(ssim(a, b)[0]))
        psnrs.append(float(psnr(a, b)[0]))
    return ssims, psnrs


def _extract(extractor: EdgeExtractor, images: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    return torch.cat([extractor.extract(images[s : s + chunk]) for s in range(0, len(images), chunk)])


def _prepare(config: AuditConfig, extractor: EdgeExtractor, rng: np.random.Generator) -> _Split:
    """Load the images, split them into attacker and victim sets, and extract their activations once."""
    samples = discover(config.data)[: config.limit]
    if len(samples) < 2:
        raise ValueError(f"{config.data} holds {len(samples)} image(s); the audit needs an attacker and a victim set")
    if not 0 < config.attacker_fraction < 1:
        raise ValueError(f"attacker_fraction must be in (0, 1), got {config.attacker_fraction}")
    batches = list(iter_batches(samples, config.img_size, 32))
    images = torch.cat([b.images for b in batches])
    boxes = [box for b in batches for box in b.letterboxes]
    n_attacker = min(max(round(config.attacker_fraction * len(images)), 1), len(images) - 1)
    order = rng.permutation(len(images))
    attacker, victims = order[:n_attacker], np.sort(order[n_attacker:])
    own = images[torch.from_numpy(attacker)]
    own = torch.cat([own, own.flip(-1)])  # mirror images: free augmentation for the attacker
    theirs = images[torch.from_numpy(victims)]
    return _Split(
        own, _extract(extractor, own), theirs, _extract(extractor, theirs), [content_region(boxes[i]) for i in victims]
    )


def _attack(
    config: AuditConfig, split: _Split, setting: Setting, rng: np.random.Generator
) -> tuple[SettingResult, torch.Tensor]:
    """Train a fresh decoder for ``setting`` and score it on the victims; also returns the reconstructions."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)  # same init and batch order for every setting
    channels, height, width = split.attacker_acts.shape[1:]
    decoder = build_decoder((channels, height, width), config.img_size, generator, config.decoder_width)
    history = train_decoder(
        decoder, lambda: release(split.attacker_acts, setting, rng), split.attacker_images, config.recipe, generator
    )
    recon = reconstruct(decoder, release(split.victim_acts, setting, rng))  # each victim image is released once
    ssims, psnrs = score(recon, split.victim_images, split.victim_regions)
    (ssim_mean, ssim_std), (psnr_mean, psnr_std) = mean_std(ssims), mean_std(psnrs)
    params = setting if isinstance(setting, PrivacyParams) else None
    bits = int(np.prod(split.victim_acts.shape[1:]))
    result = SettingResult(
        label=setting_label(setting),
        mechanism=params.mechanism.value if params else FLOAT_CEILING,
        epsilon=params.epsilon if params else None,
        p=params.p if params else None,
        q=params.q if params else None,
        epsilon_bit=params.epsilon_bit if params else None,
        epsilon_image=params.epsilon_image(bits) if params else None,
        released=params is not None,
        ssim_mean=ssim_mean,
        ssim_std=ssim_std,
        psnr_mean=psnr_mean,
        psnr_std=psnr_std,
        unrecognisable=ssim_mean < UNRECOGNISABLE_SSIM,
        train_loss=history,
        attack_seconds=round(time.perf_counter() - started, 2),
        ssim_per_image=ssims,
        psnr_per_image=psnrs,
    )
    logger.info(
        "audit setting done",
        extra={
            "setting": result.label,
            "ssim": round(ssim_mean, 4),
            "psnr": round(psnr_mean, 2),
            "seconds": result.attack_seconds,
        },
    )
    return result, recon


def run_audit(config: AuditConfig) -> AuditReport:
    """Attack every setting (the float ceiling first when asked) and write the example grid to ``config.out``."""
    started = time.perf_counter()
    loaded = load_model(config.weights, img_size=config.img_size)
    arch = build_arch(loaded.manifest.arch, loaded.manifest.nc)
    channels, height, width = feature_shape(arch, config.cut_layer, config.img_size)  # refuses bad cuts and sizes
    extractor = EdgeExtractor(arch, config.cut_layer)
    extractor.load_state_dict(split_state(loaded.state, 0, config.cut_layer))
    split_seed, float_seed, *noise_seeds = np.random.SeedSequence(config.seed).spawn(2 + len(config.settings))
    split = _prepare(config, extractor, np.random.default_rng(split_seed))
    mean_image = split.attacker_images.mean(dim=0, keepdim=True).expand_as(split.victim_images)
    floor_ssims, floor_psnrs = score(mean_image, split.victim_images, split.victim_regions)
    planned: list[tuple[Setting, np.random.SeedSequence]] = (
        [(FLOAT_CEILING, float_seed)] if config.float_ceiling else []
    )
    planned += zip(config.settings, noise_seeds, strict=True)
    results, columns = [], []
    for setting, seed in planned:
        result, recon = _attack(config, split, setting, np.random.default_rng(seed))
        results.append(result)
        columns.append((result.label, recon[: config.examples], result.ssim_per_image[: config.examples]))
    grid = None
    if config.out is not None:
        grid = str(write_grid(config.out / GRID_FILE, split.victim_images[: config.examples], columns))
    return AuditReport(
        arch=arch.name,
        weights=str(config.weights),
        cut_layer=config.cut_layer,
        img_size=config.img_size,
        feature_shape=(channels, height, width),
        bits_per_image=channels * height * width,
        attacker_images=len(split.attacker_images) // 2,
        victim_images=len(split.victim_images),
        seed=config.seed,
        recipe={**asdict(config.recipe), "decoder_width": config.decoder_width, "mirror_augmentation": True},
        ssim_threshold=UNRECOGNISABLE_SSIM,
        ssim_variant=SSIM_VARIANT,
        metric_region=METRIC_REGION,
        floor_ssim=mean_std(floor_ssims)[0],
        floor_psnr=mean_std(floor_psnrs)[0],
        settings=results,
        grid_png=grid,
        seconds=round(time.perf_counter() - started, 2),
        notes=list(THREAT_MODEL),
    )

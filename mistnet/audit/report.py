"""The audit's result: one row per setting, as a JSON-ready dict and as a markdown table."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: MistNet's paper treats a reconstruction with SSIM below this as unrecognisable.
UNRECOGNISABLE_SSIM = 0.3


@dataclass(frozen=True)
class SettingResult:
    """The attack on one setting, scored on the victims' images.

    ``epsilon_bit`` and ``epsilon_image`` are None where there is no differential privacy (``none``, and
    the float ceiling, which is never released); ``released`` is False for the float ceiling;
    ``attack_seconds`` covers training the decoder and scoring it.
    """

    label: str
    mechanism: str
    epsilon: float | None
    p: float | None
    q: float | None
    epsilon_bit: float | None
    epsilon_image: float | None
    released: bool
    ssim_mean: float
    ssim_std: float
    psnr_mean: float
    psnr_std: float
    unrecognisable: bool
    train_loss: list[float]
    attack_seconds: float
    ssim_per_image: list[float]
    psnr_per_image: list[float]


@dataclass(frozen=True)
class AuditReport:
    """Everything needed to read and reproduce an audit; ``floor_*`` score the attacker's mean image."""

    arch: str
    weights: str
    cut_layer: int
    img_size: int
    feature_shape: tuple[int, int, int]
    bits_per_image: int
    attacker_images: int
    victim_images: int
    seed: int
    recipe: dict[str, Any]
    ssim_threshold: float
    ssim_variant: str
    metric_region: str
    floor_ssim: float
    floor_psnr: float
    settings: list[SettingResult]
    grid_png: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists, no NaN/inf: PSNR is capped)."""
        return asdict(self)


def _num(value: float | None, spec: str = ".3g") -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    return format(value, spec)


def render_markdown(report: AuditReport) -> str:
    """A markdown section: the setup in a few lines and one table row per setting."""
    c, h, w = report.feature_shape
    lines = [
        f"Feature-inversion attack on `{report.arch}` cut at layer {report.cut_layer} "
        f"({c}x{h}x{w} = {report.bits_per_image} bits per image) at img_size {report.img_size}: "
        f"decoder trained on {report.attacker_images} attacker images, scored on {report.victim_images} "
        f"disjoint victim images (seed {report.seed}).",
        "",
        f"SSIM: {report.ssim_variant}. Scored on {report.metric_region}. "
        f"Unrecognisable means SSIM < {report.ssim_threshold:g} (MistNet paper). "
        f"Floor (attacker's mean image as the guess for every victim): SSIM {report.floor_ssim:.3f}, "
        f"PSNR {report.floor_psnr:.2f} dB.",
        "",
        "| setting | released | ε | ε_bit | per-image bound | SSIM mean ± std | PSNR dB mean ± std | unrecognisable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.settings:
        lines.append(
            f"| {row.label} | {'yes' if row.released else 'no (reference)'} | {_num(row.epsilon, 'g')} "
            f"| {_num(row.epsilon_bit)} | {_num(row.epsilon_image)} "
            f"| {row.ssim_mean:.3f} ± {row.ssim_std:.3f} | {row.psnr_mean:.2f} ± {row.psnr_std:.2f} "
            f"| {'yes' if row.unrecognisable else 'no'} |"
        )
    if report.grid_png:
        lines += ["", f"Examples (original | reconstruction per setting): `{report.grid_png}`"]
    if report.notes:
        lines += ["", *(f"- {note}" for note in report.notes)]
    return "\n".join(lines) + "\n"

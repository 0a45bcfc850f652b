"""The report as JSON and as a markdown table."""

from __future__ import annotations

import json

from mistnet.audit.report import AuditReport, SettingResult, render_markdown


def _row(label: str, mechanism: str, epsilon: float | None, ssim: float, released: bool = True) -> SettingResult:
    epsilon_bit = None if epsilon is None else epsilon / 2
    return SettingResult(
        label=label,
        mechanism=mechanism,
        epsilon=epsilon,
        p=None,
        q=None,
        epsilon_bit=epsilon_bit,
        epsilon_image=None if epsilon_bit is None else epsilon_bit * 1024,
        released=released,
        ssim_mean=ssim,
        ssim_std=0.01,
        psnr_mean=15.0,
        psnr_std=1.0,
        unrecognisable=ssim < 0.3,
        train_loss=[0.1],
        attack_seconds=1.0,
        ssim_per_image=[ssim],
        psnr_per_image=[15.0],
    )


REPORT = AuditReport(
    arch="yolov5n",
    weights="w.pt",
    cut_layer=4,
    img_size=64,
    feature_shape=(16, 8, 8),
    bits_per_image=1024,
    attacker_images=3,
    victim_images=1,
    seed=0,
    recipe={"epochs": 1},
    ssim_threshold=0.3,
    ssim_variant="v",
    metric_region="r",
    floor_ssim=0.1,
    floor_psnr=10.0,
    settings=[
        _row("float (ceiling)", "float", None, 0.61, released=False),
        _row("none (ε=∞)", "none", None, 0.45),
        _row("rr-sym ε=8", "rr-sym", 8.0, 0.31),
        _row("rr-sym ε=4", "rr-sym", 4.0, 0.12),
    ],
    grid_png="out/reconstructions.png",
)


class TestRenderMarkdown:
    """Every setting gets a table row with its ε, bounds, scores and verdict."""

    def test_every_setting_has_a_row(self) -> None:
        text = render_markdown(REPORT)
        rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
        assert len(rows) == 1 + len(REPORT.settings)
        for setting, line in zip(REPORT.settings, rows[1:], strict=True):
            assert line.startswith(f"| {setting.label} |")
        assert "| rr-sym ε=4 | yes | 4 | 2 | 2.05e+03 | 0.120 ± 0.010 | 15.00 ± 1.00 | yes |" in text
        assert "| float (ceiling) | no (reference) | — |" in text
        assert "0.310 ± 0.010" in text and "out/reconstructions.png" in text


class TestToDict:
    """The report is plain JSON."""

    def test_round_trips(self) -> None:
        data = json.loads(json.dumps(REPORT.to_dict(), allow_nan=False))
        assert data["feature_shape"] == [16, 8, 8]
        assert [s["label"] for s in data["settings"]][-1] == "rr-sym ε=4"

"""The audit end to end on a few COCO128 images at 64 px: the attack is real and the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from mistnet.audit.decoder import TrainRecipe
from mistnet.audit.release import parse_settings
from mistnet.audit.report import UNRECOGNISABLE_SSIM, AuditReport
from mistnet.audit.runner import AuditConfig, content_region, run_audit
from shared.dataset.letterbox import Letterbox

RECIPE = TrainRecipe(epochs=12, batch_size=8, lr=2e-3)


def _config(coco128: Path, weights: Path, **changes: object) -> AuditConfig:
    base: dict[str, object] = {
        "weights": weights,
        "data": coco128,
        "img_size": 64,
        "limit": 16,
        "settings": tuple(parse_settings("none,rr-sym:1")),
        "recipe": RECIPE,
        "decoder_width": 32,
        "seed": 0,
    }
    return AuditConfig(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def report(coco128: Path, yolov5n_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> AuditReport:
    return run_audit(_config(coco128, yolov5n_pt, out=tmp_path_factory.mktemp("audit")))


class TestRunAudit:
    """Trained on attacker images, the decoder reconstructs bits better than noisy bits or than untrained."""

    def test_bits_reconstruct_better_than_the_noisiest_setting(self, report: AuditReport) -> None:
        rows = {row.label: row for row in report.settings}
        bits, noisy = rows["none (ε=∞)"], rows["rr-sym ε=1"]
        assert bits.ssim_mean > noisy.ssim_mean + 0.03, (bits.ssim_mean, noisy.ssim_mean)
        assert bits.psnr_mean > noisy.psnr_mean

    def test_trained_beats_untrained_on_bits(self, report: AuditReport, coco128: Path, yolov5n_pt: Path) -> None:
        untrained = run_audit(
            _config(
                coco128,
                yolov5n_pt,
                settings=tuple(parse_settings("none")),
                float_ceiling=False,
                recipe=TrainRecipe(epochs=0),
            )
        )
        trained = next(row for row in report.settings if row.label == "none (ε=∞)")
        assert trained.ssim_mean > untrained.settings[0].ssim_mean + 0.05
        assert trained.psnr_mean > untrained.settings[0].psnr_mean + 1
        assert trained.ssim_mean > report.floor_ssim  # better than guessing the attacker's mean image

    def test_report_accounts_every_setting(self, report: AuditReport) -> None:
        assert [row.label for row in report.settings] == ["float (ceiling)", "none (ε=∞)", "rr-sym ε=1"]
        assert (report.attacker_images, report.victim_images) == (12, 4)
        assert report.feature_shape == (64, 8, 8) and report.bits_per_image == 4096
        ceiling, bits, noisy = report.settings
        assert not ceiling.released and ceiling.epsilon_bit is None
        assert bits.released and bits.epsilon_bit is None and bits.epsilon_image is None
        assert noisy.epsilon_bit == pytest.approx(0.5) and noisy.epsilon_image == pytest.approx(2048)
        for row in report.settings:
            assert len(row.ssim_per_image) == len(row.psnr_per_image) == 4
            assert len(row.train_loss) == RECIPE.epochs
            assert row.unrecognisable == (row.ssim_mean < UNRECOGNISABLE_SSIM)
        json.dumps(report.to_dict(), allow_nan=False)

    def test_grid_has_a_row_per_victim_and_a_column_per_setting(self, report: AuditReport) -> None:
        assert report.grid_png is not None
        grid = cv2.imread(report.grid_png)
        assert grid is not None and grid.shape == (20 + 4 * 66, 4 * 66, 3)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"attacker_fraction": 1.0}, "attacker_fraction"),
            ({"img_size": 100}, "multiple of 32"),
            ({"cut_layer": 6}, "valid cut layers are 1..4"),
        ],
    )
    def test_refuses_bad_config(self, coco128: Path, yolov5n_pt: Path, change: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            run_audit(_config(coco128, yolov5n_pt, **change))


class TestContentRegion:
    """Metrics skip the letterbox's grey border, unless the content is thinner than the SSIM window."""

    def test_landscape(self) -> None:
        box = Letterbox(0.1, (0.0, 8.0), (480, 640), (64, 64))
        assert content_region(box) == (8, 56, 0, 64)

    def test_too_thin_falls_back_to_the_whole_side(self) -> None:
        box = Letterbox(0.1, (0.0, 27.0), (100, 640), (64, 64))
        assert content_region(box) == (0, 64, 0, 64)

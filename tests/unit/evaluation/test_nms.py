"""Tests of shared.evaluation.nms on hand-built decoded outputs."""

from __future__ import annotations

import pytest
import torch

from shared.evaluation.nms import cxcywh_to_xyxy, non_max_suppression, suppress_for_display


def _decoded(*rows: list[float]) -> torch.Tensor:
    """One image's (1, A, 5 + nc) decoded output from rows ``[cx, cy, w, h, obj, cls_probs...]``."""
    return torch.tensor([rows], dtype=torch.float32)


class TestCxcywhToXyxy:
    """Centre-size boxes become corner boxes in the same unit."""

    def test_converts_centre_and_size_to_corners(self) -> None:
        boxes = torch.tensor([[50.0, 40.0, 20.0, 10.0]])
        assert cxcywh_to_xyxy(boxes).tolist() == [[40.0, 35.0, 60.0, 45.0]]


class TestNonMaxSuppression:
    """Keeps confident boxes, suppresses same-class overlaps only, and honours every limit."""

    def test_suppresses_overlapping_lower_score_box_of_same_class_only(self) -> None:
        decoded = _decoded(
            [50, 50, 20, 20, 0.9, 1.0, 0.0],  # class 0, conf 0.9
            [51, 50, 20, 20, 0.8, 1.0, 0.0],  # class 0, conf 0.8, IoU 0.90 with the first: suppressed
            [51, 50, 20, 20, 0.7, 0.0, 1.0],  # class 1, conf 0.7: another class, kept
        )
        (kept,) = non_max_suppression(decoded, multi_label=False)
        assert kept[:, 5].tolist() == [0.0, 1.0]
        assert kept[:, 4].tolist() == pytest.approx([0.9, 0.7])
        assert kept[0, :4].tolist() == [40.0, 40.0, 60.0, 60.0]

    def test_keeps_same_class_boxes_that_overlap_less_than_iou_thres(self) -> None:
        decoded = _decoded([50, 50, 20, 20, 0.9, 1.0], [60, 50, 20, 20, 0.8, 1.0])  # IoU 1/3
        (kept,) = non_max_suppression(decoded, iou_thres=0.6)
        assert kept.shape == (2, 6)

    def test_multi_label_emits_one_detection_per_class_above_threshold(self) -> None:
        decoded = _decoded([50, 50, 20, 20, 0.9, 0.5, 0.4, 0.0])
        (multi,) = non_max_suppression(decoded, multi_label=True)
        (single,) = non_max_suppression(decoded, multi_label=False)
        assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]
        assert sorted(multi[:, 4].tolist()) == pytest.approx([0.36, 0.45])
        assert single[:, 5].tolist() == [0.0]
        assert single[:, 4].tolist() == pytest.approx([0.45])

    def test_conf_is_obj_times_class_prob_and_both_must_pass_the_threshold(self) -> None:
        decoded = _decoded(
            [10, 10, 4, 4, 0.5, 0.4],  # obj passes, 0.5 * 0.4 = 0.2 does not
            [30, 30, 4, 4, 0.3, 1.0],  # 0.3 passes
            [50, 50, 4, 4, 0.2, 1.0],  # obj itself fails
        )
        (kept,) = non_max_suppression(decoded, conf_thres=0.25)
        assert kept[:, 4].tolist() == pytest.approx([0.3])

    def test_max_det_keeps_the_highest_scores(self) -> None:
        decoded = _decoded(*[[10 + 20 * i, 10, 4, 4, 0.1 * (i + 1), 1.0] for i in range(5)])
        (kept,) = non_max_suppression(decoded, max_det=3)
        assert kept[:, 4].tolist() == pytest.approx([0.5, 0.4, 0.3])

    def test_max_nms_keeps_only_the_highest_scoring_candidates(self) -> None:
        decoded = _decoded(*[[10 + 20 * i, 10, 4, 4, 0.1 * (i + 1), 1.0] for i in range(5)])
        (kept,) = non_max_suppression(decoded, max_nms=2)
        assert kept[:, 4].tolist() == pytest.approx([0.5, 0.4])

    def test_empty_candidates_give_zero_by_six_tensors_per_image(self) -> None:
        no_confident_box = torch.zeros((2, 3, 7))
        no_anchor = torch.zeros((1, 0, 7))
        for decoded in (no_confident_box, no_anchor):
            kept = non_max_suppression(decoded)
            assert len(kept) == decoded.shape[0]
            assert all(k.shape == (0, 6) for k in kept)

    def test_images_are_suppressed_independently(self) -> None:
        decoded = torch.tensor([[[50, 50, 20, 20, 0.9, 1.0]], [[50, 50, 20, 20, 0.0, 1.0]]], dtype=torch.float32)
        first, second = non_max_suppression(decoded)
        assert (first.shape[0], second.shape[0]) == (1, 0)

    def test_rejects_output_without_class_columns(self) -> None:
        with pytest.raises(ValueError, match="5 \\+ nc"):
            non_max_suppression(torch.zeros((1, 3, 5)))


class TestSuppressForDisplay:
    """The drawing preset drops boxes under conf 0.25 and keeps the best class only."""

    def test_uses_display_thresholds(self) -> None:
        decoded = _decoded([10, 10, 4, 4, 0.9, 0.6, 0.5], [40, 40, 4, 4, 0.2, 1.0, 0.0])
        (kept,) = suppress_for_display(decoded)
        assert kept[:, 5].tolist() == [0.0]
        assert kept[:, 4].tolist() == pytest.approx([0.54])

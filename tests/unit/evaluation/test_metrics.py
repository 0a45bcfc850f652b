"""Tests of shared.evaluation.metrics on hand-built detections and labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.evaluation.metrics import (
    IOU_THRESHOLDS,
    MetricsAccumulator,
    ap_per_class,
    box_iou,
    compute_ap,
    match_detections,
)

#: A perfect curve scores 0.995, not 1.0: the 101-point grid ends on the (recall 1, precision 0) sentinel.
PERFECT_AP = 0.995


def _labels(*rows: list[float]) -> np.ndarray:
    """(M, 5) ``[cls, x1, y1, x2, y2]`` float32, the dtype val.py works in."""
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def _detections(*rows: list[float]) -> np.ndarray:
    """(K, 6) ``[x1, y1, x2, y2, conf, cls]`` float32."""
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


class TestBoxIou:
    """IoU is intersection over union for every pair of corner boxes."""

    def test_identical_disjoint_and_partial_overlap(self) -> None:
        a = np.array([[0.0, 0.0, 2.0, 2.0]])
        b = np.array([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [1.0, 0.0, 3.0, 2.0]])
        assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 0.0, 2 / 6])

    def test_shape_is_n_by_m(self) -> None:
        unit_box = np.array([0.0, 0.0, 1.0, 1.0])
        assert box_iou(np.tile(unit_box, (3, 1)), np.tile(unit_box, (2, 1))).shape == (3, 2)


class TestMatchDetections:
    """A detection is correct at a threshold when matched one-to-one to a same-class label reaching it."""

    def test_wrong_class_is_never_a_true_positive(self) -> None:
        correct = match_detections(_detections([0, 0, 10, 10, 0.9, 1]), _labels([0, 0, 0, 10, 10]))
        assert not correct.any()

    def test_iou_between_thresholds_is_correct_only_up_to_its_iou(self) -> None:
        correct = match_detections(_detections([0, 0, 100, 72, 0.9, 0]), _labels([0, 0, 0, 100, 100]))
        assert correct[0].tolist() == [t <= 0.72 for t in IOU_THRESHOLDS]

    def test_duplicate_detections_of_one_object_give_one_true_positive(self) -> None:
        detections = _detections([0, 0, 10, 10, 0.9, 0], [0, 0, 10, 9, 0.8, 0])
        correct = match_detections(detections, _labels([0, 0, 0, 10, 10]))
        assert correct[0].all()
        assert not correct[1].any()

    def test_label_goes_to_its_lowest_index_detection_not_its_best_iou(self) -> None:
        # Both detections have the label as their best; after de-duplication by detection the survivors
        # are in detection order, so the label keeps detection 0 (IoU 0.6), not detection 1 (IoU 0.9) as
        # a greedy best-IoU matching would.
        detections = _detections([0, 0, 10, 6, 0.9, 0], [0, 0, 10, 9, 0.8, 0])
        correct = match_detections(detections, _labels([0, 0, 0, 10, 10]))
        assert correct[0].tolist() == [t <= 0.6 for t in IOU_THRESHOLDS]
        assert not correct[1].any()

    def test_rematching_per_threshold_hands_the_label_on_at_higher_thresholds(self) -> None:
        detections = _detections([0, 0, 10, 6, 0.9, 0], [0, 0, 10, 9, 0.8, 0])
        correct = match_detections(detections, _labels([0, 0, 0, 10, 10]), rematch_per_threshold=True)
        assert correct[0].tolist() == [t <= 0.6 for t in IOU_THRESHOLDS]
        assert correct[1].tolist() == [0.6 < t <= 0.9 for t in IOU_THRESHOLDS]

    def test_float32_iou_on_a_threshold_counts_as_val_py_does(self) -> None:
        # float32(70 / 100) lies just below the float64 0.7 but equals the float32 threshold val.py uses.
        correct = match_detections(_detections([0, 0, 7, 10, 0.9, 0]), _labels([0, 0, 0, 10, 10]))
        assert correct[0, 4]
        assert not correct[0, 5]

    def test_each_label_is_matched_once_and_each_detection_once(self) -> None:
        labels = _labels([0, 0, 0, 10, 10], [0, 20, 0, 30, 10])
        detections = _detections([0, 0, 10, 10, 0.9, 0], [20, 0, 30, 10, 0.8, 0], [1, 0, 11, 10, 0.7, 0])
        correct = match_detections(detections, labels)
        assert correct[:, 0].tolist() == [True, True, False]

    def test_no_labels_or_no_detections_give_an_all_false_matrix(self) -> None:
        assert match_detections(_detections([0, 0, 1, 1, 0.5, 0]), _labels()).shape == (1, 10)
        assert match_detections(_detections(), _labels([0, 0, 0, 1, 1])).shape == (0, 10)


class TestComputeAp:
    """AP is the 101-point integral of the precision envelope, sentinels included."""

    def test_perfect_curve_scores_0995(self) -> None:
        assert compute_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(PERFECT_AP)

    def test_hand_checked_two_point_curve(self) -> None:
        # Envelope: 1 up to recall 0.5, then linear from 1 to 0.5 at recall 1 and 0 on the sentinel:
        # 0.5 + 0.49 * (1 + 0.51) / 2 + 0.01 * 0.51 / 2 = 0.8725.
        assert compute_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.8725)

    def test_envelope_lifts_a_dip_in_precision(self) -> None:
        # Precision 0.5 at recall 2/3 is hidden by the 1.0 reached later, so the curve scores as perfect.
        dipped = compute_ap(np.array([1 / 3, 2 / 3, 1.0]), np.array([1.0, 0.5, 1.0]))
        assert dipped == pytest.approx(PERFECT_AP)


class TestApPerClass:
    """Only label classes count; one without predictions scores 0 and still weighs in the mean."""

    def test_class_without_predictions_scores_zero(self) -> None:
        tp = np.ones((1, 10), dtype=bool)
        result = ap_per_class(tp, np.array([0.9]), np.array([0.0]), np.array([0.0, 1.0]))
        assert result.classes.tolist() == [0, 1]
        assert result.ap[:, 0].tolist() == pytest.approx([PERFECT_AP, 0.0])
        assert result.precision.tolist() == [1.0, 0.0]
        assert result.recall.tolist() == [1.0, 0.0]

    def test_classes_only_predicted_are_ignored(self) -> None:
        tp = np.array([[True] * 10, [False] * 10])
        result = ap_per_class(tp, np.array([0.9, 0.95]), np.array([0.0, 2.0]), np.array([0.0]))
        assert result.classes.tolist() == [0]
        assert result.ap[0, 0] == pytest.approx(PERFECT_AP)


class TestMetricsAccumulator:
    """Per-image matches fold into val.py's P, R, mAP@0.5 and mAP@0.5:0.95."""

    def test_perfect_detections(self) -> None:
        acc = MetricsAccumulator()
        acc.add_image(_detections([0, 0, 10, 10, 0.9, 0]), _labels([0, 0, 0, 10, 10]))
        acc.add_image(
            _detections([0, 0, 10, 10, 0.8, 1], [20, 20, 40, 40, 0.7, 0]),
            _labels([1, 0, 0, 10, 10], [0, 20, 20, 40, 40]),
        )
        metrics = acc.result()
        assert (metrics.map50, metrics.map50_95) == pytest.approx((PERFECT_AP, PERFECT_AP))
        assert (metrics.precision, metrics.recall) == (1.0, 1.0)
        assert (metrics.images, metrics.instances) == (2, 3)
        assert metrics.per_class[0].n_labels == 2
        assert metrics.per_class[1].ap50 == pytest.approx(PERFECT_AP)

    def test_iou_between_thresholds_puts_map50_95_strictly_between(self) -> None:
        acc = MetricsAccumulator()
        acc.add_image(_detections([0, 0, 100, 72, 0.9, 0]), _labels([0, 0, 0, 100, 100]))
        metrics = acc.result()
        assert metrics.map50 == pytest.approx(PERFECT_AP)
        assert metrics.map50_95 == pytest.approx(PERFECT_AP * 5 / 10)

    def test_missed_label_halves_recall(self) -> None:
        acc = MetricsAccumulator()
        acc.add_image(_detections([0, 0, 10, 10, 0.9, 0]), _labels([0, 0, 0, 10, 10]))
        acc.add_image(_detections(), _labels([0, 0, 0, 10, 10]))
        metrics = acc.result()
        assert (metrics.precision, metrics.recall) == (1.0, pytest.approx(0.5))
        assert metrics.map50 == pytest.approx(0.75)  # 1 up to recall 0.5, then linear down to 0 at 1
        assert (metrics.images, metrics.instances) == (2, 2)

    def test_detections_on_an_image_without_labels_are_false_positives(self) -> None:
        acc = MetricsAccumulator()
        acc.add_image(_detections([0, 0, 10, 10, 0.9, 0]), _labels([0, 0, 0, 10, 10]))
        acc.add_image(_detections([0, 0, 10, 10, 0.95, 0]), _labels())
        metrics = acc.result()
        assert metrics.map50 < PERFECT_AP
        assert metrics.precision < 1.0
        assert (metrics.images, metrics.instances) == (2, 1)

    def test_without_a_correct_detection_everything_is_zero(self) -> None:
        acc = MetricsAccumulator()
        acc.add_image(_detections(), _labels([0, 0, 0, 10, 10]))
        acc.add_image(_detections([0, 0, 10, 10, 0.9, 1]), _labels([0, 0, 0, 10, 10]))
        metrics = acc.result()
        assert (metrics.precision, metrics.recall, metrics.map50, metrics.map50_95) == (0.0, 0.0, 0.0, 0.0)
        assert (metrics.images, metrics.instances) == (2, 2)
        assert metrics.per_class[0].n_labels == 2

    def test_nothing_added_gives_zeros(self) -> None:
        metrics = MetricsAccumulator().result()
        assert metrics.to_dict() == {
            "map50": 0.0,
            "map50_95": 0.0,
            "precision": 0.0,
            "recall": 0.0,
            "images": 0,
            "instances": 0,
        }

    def test_to_dict_holds_plain_python_numbers(self) -> None:
        acc = MetricsAccumulator()
        acc.add_image(_detections([0, 0, 10, 10, 0.9, 0]), _labels([0, 0, 0, 10, 10]))
        as_dict = acc.result().to_dict()
        assert {type(v) for k, v in as_dict.items() if k not in {"images", "instances"}} == {float}
        assert json.loads(json.dumps(as_dict)) == as_dict

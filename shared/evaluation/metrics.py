"""Precision, recall and mAP@0.5 / mAP@0.5:0.95 computed exactly as YOLOv5 v6.1 ``val.py`` computes them.

Pure numpy. The steps follow v6.1 to the call where it matters (sort calls and their dtypes, the order of
the two de-duplication steps, the 101-point AP), so that the same detections give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]

#: IoU thresholds of mAP@0.5:0.95: 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS: npt.NDArray[np.float64] = np.linspace(0.5, 0.95, 10)

#: Confidence grid on which the P, R and F1 curves are sampled.
_CONF_GRID = np.linspace(0, 1, 1000)
_EPS = 1e-16


def box_iou(boxes_a: FloatArray, boxes_b: FloatArray) -> FloatArray:
    """IoU (n, m) of (n, 4) and (m, 4) ``[x1, y1, x2, y2]`` boxes; NaN where both have zero area."""
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    overlap_wh = np.minimum(boxes_a[:, None, 2:], boxes_b[:, 2:]) - np.maximum(boxes_a[:, None, :2], boxes_b[:, :2])
    inter = overlap_wh.clip(0).prod(2)
    # No epsilon, as in v6.1: a degenerate pair yields NaN, which then matches nothing.
    with np.errstate(invalid="ignore", divide="ignore"):
        iou: FloatArray = inter / (area_a[:, None] + area_b - inter)
    return iou


def match_detections(
    detections: FloatArray,
    labels: FloatArray,
    iouv: FloatArray = IOU_THRESHOLDS,
    *,
    rematch_per_threshold: bool = False,
) -> BoolArray:
    """Which detections are true positives at each IoU threshold: (K, T) bool.

    ``detections`` (K, 6) ``[x1, y1, x2, y2, conf, cls]`` and ``labels`` (M, 5) ``[cls, x1, y1, x2, y2]``
    must share one coordinate space. v6.1 matches once, at the lowest threshold, and marks a matched
    detection correct at every threshold its IoU reaches. ``rematch_per_threshold`` instead redoes the
    matching at each threshold, as YOLOv5 does from v6.2 on.
    """
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    if detections.shape[0] == 0 or labels.shape[0] == 0:
        return correct
    iou = box_iou(labels[:, 1:5], detections[:, :4])
    # v6.1 compares in the IoU's dtype (float32 in val.py); float32(0.7) < 0.7, so this decides ties.
    thresholds = iouv.astype(iou.dtype)
    same_class = labels[:, 0:1] == detections[:, 5]
    if rematch_per_threshold:
        for column, threshold in enumerate(thresholds):
            matched, _ = _match_pairs(iou, same_class & (iou >= threshold))
            correct[matched, column] = True
    else:
        matched, matched_iou = _match_pairs(iou, same_class & (iou >= thresholds[0]))
        correct[matched] = matched_iou[:, None] >= thresholds
    return correct


def _match_pairs(iou: FloatArray, candidates: BoolArray) -> tuple[npt.NDArray[np.intp], FloatArray]:
    """One-to-one (label, detection) pairs among ``candidates`` (M, K): matched detection indices and IoUs.

    Pairs are sorted by IoU descending; each detection keeps its first pair, then each label keeps its
    first surviving pair. ``np.unique`` leaves the survivors of the first step ordered by detection index
    and v6.1 does not re-sort, so a label goes to its lowest-index detection, not its highest-IoU one.
    """
    label_index, detection_index = np.nonzero(candidates)
    pair_iou = iou[label_index, detection_index]
    order = np.argsort(pair_iou)[::-1]
    order = order[np.unique(detection_index[order], return_index=True)[1]]
    order = order[np.unique(label_index[order], return_index=True)[1]]
    return detection_index[order], pair_iou[order]


def compute_ap(recall: FloatArray, precision: FloatArray) -> float:
    """Area under the precision envelope of one PR curve, by 101-point interpolation (COCO style).

    ``recall`` and ``precision`` (K,) are cumulative over detections sorted by confidence. The sentinel
    (recall 1, precision 0) makes a perfect curve score 0.995, as in YOLOv5.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


@dataclass(frozen=True)
class ClassAP:
    """Per-class results of :func:`ap_per_class`, one row per class present in the labels."""

    classes: npt.NDArray[np.int64]  # (C,)
    ap: npt.NDArray[np.float64]  # (C, T) AP at each IoU threshold
    precision: npt.NDArray[np.float64]  # (C,) at the confidence that maximises the mean F1
    recall: npt.NDArray[np.float64]  # (C,) at that same confidence


def ap_per_class(tp: BoolArray, conf: FloatArray, pred_cls: FloatArray, target_cls: FloatArray) -> ClassAP:
    """AP per class and IoU threshold, and P and R at the confidence of best mean F1.

    ``tp`` (K, T) bool, ``conf`` (K,) and ``pred_cls`` (K,) describe all detections of the data set,
    ``target_cls`` (M,) all its labels. Only classes present in the labels count; one without
    detections keeps AP, P and R of 0.
    """
    order = np.argsort(-conf)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes = np.unique(target_cls)
    ap = np.zeros((classes.shape[0], tp.shape[1]))
    p_curve = np.zeros((classes.shape[0], _CONF_GRID.shape[0]))
    r_curve = np.zeros((classes.shape[0], _CONF_GRID.shape[0]))
    for row, cls in enumerate(classes):
        of_class = pred_cls == cls
        n_labels = int((target_cls == cls).sum())
        if not of_class.any() or n_labels == 0:
            continue
        tpc = tp[of_class].cumsum(0)
        fpc = (1 - tp[of_class]).cumsum(0)
        recall = tpc / (n_labels + _EPS)
        precision = tpc / (tpc + fpc)
        r_curve[row] = np.interp(-_CONF_GRID, -conf[of_class], recall[:, 0], left=0)
        p_curve[row] = np.interp(-_CONF_GRID, -conf[of_class], precision[:, 0], left=1)
        for column in range(tp.shape[1]):
            ap[row, column] = compute_ap(recall[:, column], precision[:, column])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + _EPS)
    best = int(f1.mean(0).argmax())
    return ClassAP(classes.astype(np.int64), ap, p_curve[:, best], r_curve[:, best])


@dataclass(frozen=True)
class ClassMetrics:
    """One class's AP@0.5, AP@0.5:0.95, precision, recall and number of labels."""

    ap50: float
    ap50_95: float
    precision: float
    recall: float
    n_labels: int


@dataclass(frozen=True)
class DetectionMetrics:
    """Data-set metrics as ``val.py`` prints them: means over the classes present in the labels."""

    precision: float
    recall: float
    map50: float
    map50_95: float
    per_class: dict[int, ClassMetrics]
    images: int
    instances: int

    def to_dict(self) -> dict[str, float | int]:
        """The headline numbers, JSON-ready."""
        return {
            "map50": self.map50,
            "map50_95": self.map50_95,
            "precision": self.precision,
            "recall": self.recall,
            "images": self.images,
            "instances": self.instances,
        }


class MetricsAccumulator:
    """Collects per-image matches as ``val.py`` does and turns them into :class:`DetectionMetrics`."""

    def __init__(self) -> None:
        self._correct: list[BoolArray] = []
        self._conf: list[FloatArray] = []
        self._pred_cls: list[FloatArray] = []
        self._target_cls: list[FloatArray] = []
        self._images = 0

    def add_image(self, detections: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Adds one image's (K, 6) ``[x1, y1, x2, y2, conf, cls]`` and (M, 5) ``[cls, x1, y1, x2, y2]``.

        Both must be in the same coordinate space. They are taken as float32, the dtype ``val.py``
        works in, so that IoU ties at the thresholds fall the same way.
        """
        detections = np.asarray(detections, dtype=np.float32).reshape(-1, 6)
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        self._images += 1
        if detections.shape[0] == 0:
            if labels.shape[0]:
                self._append(np.zeros((0, IOU_THRESHOLDS.shape[0]), dtype=bool), detections, labels)
            return
        self._append(match_detections(detections, labels), detections, labels)

    def _append(self, correct: BoolArray, detections: FloatArray, labels: FloatArray) -> None:
        self._correct.append(correct)
        self._conf.append(detections[:, 4])
        self._pred_cls.append(detections[:, 5])
        self._target_cls.append(labels[:, 0])

    def result(self) -> DetectionMetrics:
        """Means over the classes in the labels; all zero when no detection is correct at any threshold."""
        target_cls = np.concatenate(self._target_cls) if self._target_cls else np.zeros(0, np.float32)
        classes, counts = np.unique(target_cls.astype(np.int64), return_counts=True)
        tp = np.concatenate(self._correct) if self._correct else np.zeros((0, 1), dtype=bool)
        if not tp.any():  # v6.1 skips ap_per_class entirely in this case
            per_class = {int(c): ClassMetrics(0.0, 0.0, 0.0, 0.0, int(n)) for c, n in zip(classes, counts, strict=True)}
            return DetectionMetrics(0.0, 0.0, 0.0, 0.0, per_class, self._images, int(target_cls.shape[0]))
        result = ap_per_class(tp, np.concatenate(self._conf), np.concatenate(self._pred_cls), target_cls)
        ap50, ap50_95 = result.ap[:, 0], result.ap.mean(1)
        per_class = {
            int(c): ClassMetrics(
                float(ap50[i]),
                float(ap50_95[i]),
                float(result.precision[i]),
                float(result.recall[i]),
                int(counts[i]),
            )
            for i, c in enumerate(result.classes)
        }
        return DetectionMetrics(
            precision=float(result.precision.mean()),
            recall=float(result.recall.mean()),
            map50=float(ap50.mean()),
            map50_95=float(ap50_95.mean()),
            per_class=per_class,
            images=self._images,
            instances=int(target_cls.shape[0]),
        )

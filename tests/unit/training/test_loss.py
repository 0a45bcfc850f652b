"""Tests of the YOLOv5 loss: CIoU, target assignment, the loss itself and training the cloud part with it."""

from __future__ import annotations

import math

import pytest
import torch

from shared.training.loss import LossHyp, YoloLoss, assign_targets, bbox_ciou
from shared.yolo.blocks import Detect
from shared.yolo.network import EdgeExtractor, YoloSegment, build_model, split_model
from shared.yolo.table import ANCHORS_PX

IMG_SIZE = 128
STRIDES = [8, 16, 32]


def _detect(nc: int = 3, channels: tuple[int, ...] = (8, 8, 8)) -> Detect:
    torch.manual_seed(0)
    return Detect(nc, ANCHORS_PX, channels, STRIDES).train()


def _features(n: int, img_size: int = IMG_SIZE, channels: int = 8) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, channels, img_size // s, img_size // s, generator=generator) for s in STRIDES]


def _rectangles_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 128x128 images of flat coloured rectangles on grey, and their (M, 6) targets."""
    # (image, class, left, top, right, bottom) in pixels; classes are the rectangle colours.
    rects = [
        (0, 0, 10, 12, 42, 40),
        (0, 1, 70, 60, 118, 120),
        (1, 2, 30, 30, 62, 94),
        (1, 0, 80, 8, 104, 30),
        (2, 1, 4, 70, 60, 110),
        (2, 2, 76, 20, 120, 64),
    ]
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    images = torch.full((3, 3, IMG_SIZE, IMG_SIZE), 0.5)
    targets = []
    for img, cls, left, top, right, bottom in rects:
        images[img, :, top:bottom, left:right] = colours[cls].view(3, 1, 1)
        cx, cy = (left + right) / 2 / IMG_SIZE, (top + bottom) / 2 / IMG_SIZE
        w, h = (right - left) / IMG_SIZE, (bottom - top) / IMG_SIZE
        targets.append([img, cls, cx, cy, w, h])
    return images, torch.tensor(targets)


def _raw_maps(detect: Detect, n: int) -> list[torch.Tensor]:
    maps = detect(_features(n))
    assert isinstance(maps, list)
    return maps


def _split_yolov5n(nc: int) -> tuple[EdgeExtractor, YoloSegment]:
    torch.manual_seed(0)
    edge, cloud = split_model(build_model("yolov5n", nc=nc), 4)
    return edge, cloud


class TestBboxCiou:
    """bbox_ciou is 1 for identical boxes, penalises distance and aspect mismatch, and is symmetric."""

    def test_identical_boxes_give_one(self) -> None:
        boxes = torch.tensor([[3.0, 4.0, 2.0, 5.0], [0.5, 0.5, 0.1, 0.3]])
        assert torch.allclose(bbox_ciou(boxes, boxes), torch.ones(2), atol=1e-5)

    def test_disjoint_boxes_are_negative(self) -> None:
        ciou = bbox_ciou(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([5.0, 0.0, 1.0, 1.0]))
        # IoU 0, centre distance 5, enclosing box 6 x 1: -25/37.
        assert ciou.item() == pytest.approx(-25 / 37, abs=1e-5)

    def test_shifted_square_matches_hand_value(self) -> None:
        # Corners (-1,-1,1,1) and (0,-1,2,1): IoU 2/6, rho² 1, enclosing 3 x 2 so c² 13, same aspect.
        ciou = bbox_ciou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([1.0, 0.0, 2.0, 2.0]))
        assert ciou.item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-5)

    def test_aspect_mismatch_matches_hand_value(self) -> None:
        # Concentric 2x2 and 4x2: IoU 1/2, rho 0, v = 4/π²(atan 2 - atan 1)², α = v / (v + 1/2).
        ciou = bbox_ciou(torch.tensor([0.0, 0.0, 2.0, 2.0]), torch.tensor([0.0, 0.0, 4.0, 2.0]))
        v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
        assert ciou.item() == pytest.approx(0.5 - v * v / (v + 0.5), abs=1e-5)

    def test_symmetric(self) -> None:
        generator = torch.Generator().manual_seed(0)
        a = torch.rand(64, 4, generator=generator) * torch.tensor([10.0, 10.0, 4.0, 4.0]) + 0.1
        b = torch.rand(64, 4, generator=generator) * torch.tensor([10.0, 10.0, 4.0, 4.0]) + 0.1
        assert torch.allclose(bbox_ciou(a, b), bbox_ciou(b, a), atol=1e-6)
        assert bool((bbox_ciou(a, b) <= 1).all())

    def test_alpha_carries_no_gradient(self) -> None:
        pred = torch.tensor([0.3, 0.2, 2.0, 1.0], requires_grad=True)
        bbox_ciou(pred, torch.tensor([0.0, 0.0, 1.0, 3.0])).backward()
        assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())
        assert pred.grad.abs().sum().item() > 0


class TestAssignTargets:
    """assign_targets gives a target its own cell and two nearest neighbours at levels whose anchors fit."""

    # A 16x16 px box centred at (50, 70) px of a 128 px image.
    TARGET = torch.tensor([[1.0, 2.0, 50 / 128, 70 / 128, 16 / 128, 16 / 128]])

    def _assign(self, level: int) -> set[tuple[float, ...]]:
        grid = IMG_SIZE // STRIDES[level]
        anchors = torch.tensor(ANCHORS_PX[level]).view(3, 2) / STRIDES[level]
        assigned = assign_targets(self.TARGET, anchors, (grid, grid), 4.0)
        assert bool((assigned.image == 1).all()) and bool((assigned.cls == 2).all())
        rows = zip(assigned.anchor, assigned.gy, assigned.gx, assigned.box, strict=True)
        return {(int(a), int(gy), int(gx), *[round(float(v), 4) for v in box]) for a, gy, gx, box in rows}

    def test_p3_own_left_and_down_cells_for_every_anchor(self) -> None:
        # Grid units: centre (6.25, 8.75), size 2x2; fits all three P3 anchors.
        expected = {
            (a, gy, gx, dx, dy, 2.0, 2.0)
            for a in range(3)
            for gy, gx, dx, dy in [(8, 6, 0.25, 0.75), (8, 5, 1.25, 0.75), (9, 6, 0.25, -0.25)]
        }
        assert self._assign(0) == expected

    def test_p4_own_left_and_up_cells_for_the_two_fitting_anchors(self) -> None:
        # Grid units: centre (3.125, 4.375), size 1x1; the third anchor (3.7 x 7.4) is over 4x too big.
        expected = {
            (a, gy, gx, dx, dy, 1.0, 1.0)
            for a in range(2)
            for gy, gx, dx, dy in [(4, 3, 0.125, 0.375), (4, 2, 1.125, 0.375), (3, 3, 0.125, 1.375)]
        }
        assert self._assign(1) == expected

    def test_p5_anchors_over_4x_off_take_nothing(self) -> None:
        assert self._assign(2) == set()

    def test_cells_stay_inside_the_grid(self) -> None:
        generator = torch.Generator().manual_seed(0)
        targets = torch.cat((torch.zeros(200, 2), torch.rand(200, 4, generator=generator) * 0.999), dim=1)
        assigned = assign_targets(targets, torch.ones(3, 2), (4, 6), 1e9)
        assert assigned.gy.numel() > 600
        assert int(assigned.gy.min()) >= 0 and int(assigned.gy.max()) <= 3
        assert int(assigned.gx.min()) >= 0 and int(assigned.gx.max()) <= 5

    def test_no_targets(self) -> None:
        assigned = assign_targets(torch.zeros(0, 6), torch.ones(3, 2), (4, 4), 4.0)
        assert assigned.box.shape == (0, 4) and assigned.anchor.numel() == 0


class TestYoloLoss:
    """YoloLoss is a finite positive scalar with gradients to the head; only objectness without targets."""

    TARGETS = torch.tensor([[0, 1, 0.3, 0.4, 0.2, 0.3], [1, 2, 0.7, 0.6, 0.5, 0.4], [1, 0, 0.5, 0.5, 0.05, 0.1]])

    def test_finite_positive_with_grad_to_every_head_parameter(self) -> None:
        detect = _detect()
        maps = _raw_maps(detect, 2)
        total, parts = YoloLoss(detect, IMG_SIZE)(maps, self.TARGETS)
        assert total.ndim == 0 and bool(torch.isfinite(total)) and total.item() > 0
        assert parts.shape == (3,) and not parts.requires_grad and bool((parts > 0).all())
        assert total.item() == pytest.approx(parts.sum().item() * 2, rel=1e-5)
        total.backward()
        for name, param in detect.named_parameters():
            assert param.grad is not None and param.grad.abs().sum().item() > 0, name

    @pytest.mark.parametrize("targets", [torch.zeros(0, 6), torch.zeros(0, 6, dtype=torch.float64)])
    def test_no_targets_give_objectness_only(self, targets: torch.Tensor) -> None:
        detect = _detect()
        total, parts = YoloLoss(detect, IMG_SIZE)(_raw_maps(detect, 2), targets)
        assert parts[0].item() == 0 and parts[2].item() == 0 and parts[1].item() > 0
        total.backward()
        assert all(p.grad is not None for p in detect.parameters())

    def test_single_class_has_no_class_loss(self) -> None:
        detect = _detect(nc=1)
        single_class = self.TARGETS * torch.tensor([1, 0, 1, 1, 1, 1])
        _, parts = YoloLoss(detect, IMG_SIZE)(_raw_maps(detect, 2), single_class)
        assert parts[0].item() > 0 and parts[2].item() == 0

    def test_gains_follow_image_size_and_class_count(self) -> None:
        detect = _detect(nc=8)
        loss = YoloLoss(detect, 320, LossHyp(box=0.1))
        assert loss.box_gain == pytest.approx(0.1)
        assert loss.obj_gain == pytest.approx(0.25)
        assert loss.cls_gain == pytest.approx(0.05)

    def test_label_smoothing_raises_the_floor_of_class_loss(self) -> None:
        detect = _detect()
        maps = _raw_maps(detect, 2)
        _, plain = YoloLoss(detect, IMG_SIZE)(maps, self.TARGETS)
        _, smoothed = YoloLoss(detect, IMG_SIZE, LossHyp(label_smoothing=0.2))(maps, self.TARGETS)
        assert smoothed[0].item() == pytest.approx(plain[0].item())
        assert smoothed[2].item() != pytest.approx(plain[2].item())

    def test_rejects_malformed_targets(self) -> None:
        detect = _detect()
        with pytest.raises(ValueError, match="targets must be"):
            YoloLoss(detect, IMG_SIZE)(_raw_maps(detect, 1), torch.zeros(3, 5))

    @pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
    def test_follows_the_head_to_its_device(self, device: str) -> None:
        detect = _detect().to(device)
        maps = detect([f.to(device) for f in _features(2)])
        assert isinstance(maps, list)
        total, parts = YoloLoss(detect, IMG_SIZE)(maps, self.TARGETS)
        total.backward()
        assert total.device.type == device and bool(torch.isfinite(parts).all())


class TestCloudTraining:
    """Training the cloud part on frozen edge features lowers YoloLoss and leaves the edge as it was."""

    @pytest.mark.slow
    def test_overfits_a_few_synthetic_images(self) -> None:
        edge, cloud = _split_yolov5n(nc=3)
        images, targets = _rectangles_batch()
        features = edge.extract(images).clone()
        cloud.train()
        loss_fn = YoloLoss(cloud.detect, IMG_SIZE)
        optimiser = torch.optim.Adam(cloud.parameters(), lr=1e-3)
        first_total, first_parts = 0.0, torch.zeros(3)
        for step in range(60):
            maps = cloud(features)
            assert isinstance(maps, list)
            total, parts = loss_fn(maps, targets)
            optimiser.zero_grad()
            total.backward()
            optimiser.step()
            if step == 0:
                first_total, first_parts = total.item(), parts
        # Seen on CPU: total 0.92 -> 0.27, box 0.115 -> 0.021, obj 0.152 -> 0.064, cls 0.040 -> 0.005.
        assert total.item() < 0.5 * first_total
        assert parts[0].item() < 0.5 * first_parts[0].item()
        assert parts[2].item() < 0.5 * first_parts[2].item()

    def test_cloud_step_leaves_edge_untouched(self) -> None:
        edge, cloud = _split_yolov5n(nc=3)
        images, targets = _rectangles_batch()
        edge_before = {k: v.clone() for k, v in edge.state_dict().items()}
        cloud_before = {k: v.clone() for k, v in cloud.named_parameters()}
        edge.train()
        cloud.train()
        optimiser = torch.optim.SGD([*edge.parameters(), *cloud.parameters()], lr=0.01, momentum=0.9)
        features = edge.extract(images).clone()
        maps = cloud(features)
        assert isinstance(maps, list)
        total, _ = YoloLoss(cloud.detect, IMG_SIZE)(maps, targets)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        assert not edge.training
        for key, value in edge.state_dict().items():
            assert torch.equal(value, edge_before[key]), key
        changed = [k for k, v in cloud.named_parameters() if not torch.equal(v, cloud_before[k])]
        assert len(changed) == len(cloud_before)

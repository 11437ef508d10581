"""FCOS target assignment, losses and decoding on hand-built cases (maskkit/models/centermask/fcos.py)."""

from __future__ import annotations

import math

import pytest
import torch

from maskkit.models.centermask.fcos import (
    FCOSHead,
    centerness_target,
    fcos_decode,
    fcos_losses,
    fcos_targets,
    flatten_levels,
    level_locations,
)

STRIDES = [8, 16, 32, 64, 128]


def _one_location_per_level(x: float, y: float) -> list[torch.Tensor]:
    return [torch.tensor([[x, y]]) for _ in STRIDES]


def _target(boxes, labels, crowd=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor(labels, dtype=torch.int64)
    crowd = torch.zeros_like(labels) if crowd is None else torch.tensor(crowd)
    return {"boxes": boxes, "labels": labels, "iscrowd": crowd}


def test_level_locations_are_cell_centres():
    feats = [torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)]
    locs = level_locations(feats, [8, 16])
    assert locs[0].tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert locs[1].tolist() == [[8, 8], [24, 8]]


@pytest.mark.parametrize("edge,levels", [(64, (0, 1)), (128, (1, 2)), (256, (2, 3)), (512, (3, 4))])
def test_box_on_a_level_boundary_is_positive_on_both_levels(edge, levels):
    # Location at the centre of a 2e x 2e box: max(l,t,r,b) = e exactly, the shared edge of
    # two size ranges [.., e] and [e, ..]: both levels claim it, the others do not.
    locs = _one_location_per_level(edge, edge)
    labels, box_t = fcos_targets(locs, STRIDES, [_target([[0, 0, 2 * edge, 2 * edge]], [3])])
    expected = [3 if i in levels else 0 for i in range(5)]
    assert labels[0].tolist() == expected
    for i in levels:
        assert torch.allclose(box_t[0, i], torch.full((4,), edge / STRIDES[i]))


def test_overlapping_boxes_smallest_area_wins():
    locs = [torch.tensor([[50.0, 50.0]])]
    big, small = [0, 0, 100, 100], [30, 30, 70, 70]
    for order in ([big, small], [small, big]):
        labs = [1, 2] if order[0] is big else [2, 1]
        labels, box_t = fcos_targets(locs, [8], [_target(order, labs)], size_of_interest=())
        assert labels.tolist() == [[2]]
        assert torch.allclose(box_t[0, 0], torch.full((4,), 20 / 8))


def test_center_sampling_radius():
    box = [[0, 0, 60, 60]]  # centre (30, 30); radius 1.5 * 8 = 12 px on P3
    locs = [torch.tensor([[10.0, 10.0], [40.0, 38.0], [44.0, 30.0], [30.0, 30.0]])]
    labels, _ = fcos_targets(locs, [8], [_target(box, [1])], size_of_interest=(64.0,), center_sampling_radius=1.5)
    assert labels[0].tolist() == [0, 1, 0, 1]  # (10,10) inside the box but 20 px off centre; (44,30) 14 px off
    labels, _ = fcos_targets(locs, [8], [_target(box, [1])], size_of_interest=(64.0,), center_sampling_radius=0.0)
    assert labels[0].tolist() == [1, 1, 1, 1]  # without center sampling: anywhere inside the box


def test_center_region_is_clipped_to_the_box():
    # A thin box: the 12 px radius would reach outside it; the region is clipped to the box.
    box = [[20, 28, 60, 34]]
    locs = [torch.tensor([[40.0, 26.0], [40.0, 30.0]])]
    labels, _ = fcos_targets(locs, [8], [_target(box, [1])], size_of_interest=(64.0,))
    assert labels[0].tolist() == [0, 1]


def test_crowd_is_ignored_never_positive():
    locs = [torch.tensor([[20.0, 20.0], [80.0, 80.0], [150.0, 150.0]])]
    tgt = _target([[0, 0, 40, 40], [60, 60, 100, 100]], [1, 2], crowd=[0, 1])
    labels, _ = fcos_targets(locs, [8], [tgt], size_of_interest=(64.0,))
    assert labels[0].tolist() == [1, -1, 0]
    crowd_only = _target([[60, 60, 100, 100]], [2], crowd=[1])
    labels, _ = fcos_targets(locs, [8], [crowd_only], size_of_interest=(64.0,))
    assert labels[0].tolist() == [0, -1, 0]


def test_empty_targets_are_all_background():
    locs = level_locations([torch.zeros(1, 1, 4, 4)], [8])
    labels, box_t = fcos_targets(locs, [8], [_target([], [])], size_of_interest=())
    assert labels.shape == (1, 16) and (labels == 0).all() and box_t.shape == (1, 16, 4)


def test_centerness_target_values():
    t = torch.tensor([[10.0, 10.0, 10.0, 10.0], [10.0, 5.0, 30.0, 5.0]])
    assert torch.allclose(centerness_target(t), torch.tensor([1.0, math.sqrt(1 / 3)]))


def test_losses_no_positives_are_finite_and_differentiable():
    cls = torch.randn(2, 10, 3, requires_grad=True)
    reg = torch.rand(2, 10, 4, requires_grad=True)
    ctr = torch.randn(2, 10, requires_grad=True)
    labels = torch.zeros(2, 10, dtype=torch.int64)
    labels[1, :4] = -1  # ignored
    out = fcos_losses(cls, reg, ctr, labels, torch.zeros(2, 10, 4))
    assert all(torch.isfinite(v) for v in out.values())
    assert out["loss_box"].item() == 0 and out["loss_ctr"].item() == 0
    sum(out.values()).backward()
    assert cls.grad[1, :4].abs().sum() == 0  # ignored locations get no gradient
    assert cls.grad[0].abs().sum() > 0


def test_losses_perfect_boxes_have_zero_giou_loss():
    labels = torch.tensor([[0, 2, 1]])
    tgt = torch.tensor([[[0.0, 0, 0, 0], [1.0, 2.0, 3.0, 1.5], [2.0, 2.0, 2.0, 2.0]]])
    cls = torch.full((1, 3, 2), -5.0)
    out = fcos_losses(cls, tgt.clone(), torch.zeros(1, 3), labels, tgt)
    assert out["loss_box"].item() == pytest.approx(0.0, abs=1e-6)
    worse = fcos_losses(cls, tgt * 0.5, torch.zeros(1, 3), labels, tgt)
    assert worse["loss_box"].item() > 0.2


def _level(h, w, k):
    return torch.full((1, k, h, w), -10.0), torch.zeros(1, 4, h, w), torch.full((1, 1, h, w), 10.0)


def test_decode_known_box_scoring_and_nms():
    cls, reg, ctr = _level(4, 4, 3)
    cls[0, 1, 1, 2] = 2.0  # class 2 at cell (y=1, x=2): location (20, 12) on stride 8
    reg[0, :, 1, 2] = torch.tensor([1.0, 1.0, 2.0, 0.5])  # ltrb / stride
    ctr[0, 0, 1, 2] = 0.0  # centerness 0.5
    cls[0, 1, 1, 1] = 1.0  # a weaker duplicate of the same box one cell left
    reg[0, :, 1, 1] = torch.tensor([0.0, 1.0, 3.0, 0.5])
    ctr[0, 0, 1, 1] = 0.0
    locs = level_locations([cls], [8])
    out = fcos_decode([cls], [reg], [ctr], locs, [8], [(32, 32)], score_thresh=0.05, nms_thresh=0.6)[0]
    p = torch.sigmoid(torch.tensor(2.0)).item()
    assert out["labels"].tolist() == [2]
    assert torch.allclose(out["boxes"], torch.tensor([[12.0, 4.0, 36.0, 16.0]]).clamp(max=32))
    assert out["scores"].item() == pytest.approx(math.sqrt(p * 0.5), rel=1e-5)
    prod = fcos_decode([cls], [reg], [ctr], locs, [8], [(32, 32)], scoring="product")[0]
    assert prod["scores"].item() == pytest.approx(p * 0.5, rel=1e-5)


def test_decode_threshold_topk_and_detection_cap():
    cls, reg, ctr = _level(8, 8, 2)
    cls[:] = torch.linspace(-3, 3, 128).reshape(1, 2, 8, 8)
    reg[:] = 0.4
    locs = level_locations([cls], [8])
    out = fcos_decode(
        [cls], [reg], [ctr], locs, [8], [(64, 64)], score_thresh=0.5, pre_nms_topk=1000, detections_per_image=100
    )[0]
    assert len(out["scores"]) == int((torch.sigmoid(cls) > 0.5).sum())
    assert (out["scores"][:-1] >= out["scores"][1:]).all()
    capped = fcos_decode(
        [cls], [reg], [ctr], locs, [8], [(64, 64)], score_thresh=0.0, pre_nms_topk=10, detections_per_image=5
    )[0]
    assert len(capped["scores"]) == 5
    none = fcos_decode([cls], [reg], [ctr], locs, [8], [(64, 64)], score_thresh=0.99)[0]
    assert none["boxes"].shape == (0, 4) and none["labels"].dtype == torch.int64


def test_head_shapes_prior_and_flatten():
    head = FCOSHead(32, num_classes=5, num_convs=2, num_levels=2)
    feats = [torch.randn(2, 32, 8, 10), torch.randn(2, 32, 4, 5)]
    cls, reg, ctr = head(feats)
    assert [c.shape for c in cls] == [(2, 5, 8, 10), (2, 5, 4, 5)]
    assert [r.shape for r in reg] == [(2, 4, 8, 10), (2, 4, 4, 5)] and all((r >= 0).all() for r in reg)
    assert [c.shape for c in ctr] == [(2, 1, 8, 10), (2, 1, 4, 5)]
    assert torch.sigmoid(head.cls_logits.bias).allclose(torch.tensor(0.01))
    flat = flatten_levels(cls)
    assert flat.shape == (2, 100, 5)
    assert torch.equal(flat[1, 80 + 2 * 5 + 3], cls[1][1, :, 2, 3])

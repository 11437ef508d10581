"""SAG-Mask branch: Eq. 2 / Eq. 1 level assignment, RoIAlign routing, SAM, mask targets from
dense (polygon or RLE) masks, mask loss, MaskIoU targets/head (maskkit/models/centermask)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskkit.models.centermask.mask_head import (
    SAGMaskHead,
    SpatialAttention,
    assign_fpn_levels,
    mask_loss,
    mask_targets,
    match_rois,
    multilevel_roi_align,
)
from maskkit.models.centermask.maskiou import MaskIoUHead, mask_ratios, maskiou_loss, maskiou_targets


def _square(area: float) -> list[float]:
    s = math.sqrt(area)
    return [0.0, 0.0, s, s]


@pytest.mark.parametrize(
    "fraction,level",
    [
        (0.9, 5),  # more than half the input -> the top level k_max (paper Sec. 2.3)
        (0.51, 5),
        (0.5, 4),  # exactly half: ceil(5 - 1) = 4
        (0.3, 4),  # ceil(5 - log2(3.33)) = ceil(3.26)
        (0.25, 3),  # ceil(5 - 2) = 3
        (0.05, 3),  # ceil(5 - 4.32) = 1 -> clamped to k_min
    ],
)
def test_eq2_worked_examples(fraction, level):
    image_area = 800.0 * 1000.0
    boxes = torch.tensor([_square(fraction * image_area)])
    assert assign_fpn_levels(boxes, image_area, 3, 5, "eq2").tolist() == [level]


def test_eq2_paper_example_and_per_roi_image_area():
    # Sec. 2.3: a 224^2 RoI in a 1024x1024 input, k_max = 7: ceil(7 - log2(1024^2 / 224^2)) = ceil(2.62) = 3.
    boxes = torch.tensor([[0.0, 0.0, 224.0, 224.0]] * 2)
    assert assign_fpn_levels(boxes, 1024.0 * 1024.0, 3, 7, "eq2").tolist() == [3, 3]
    # Eq. 1 puts the same RoI on P4 whatever the input size; Eq. 2 depends on the input area.
    assert assign_fpn_levels(boxes, 1024.0 * 1024.0, 3, 7, "eq1").tolist() == [4, 4]
    areas = torch.tensor([224.0 * 224.0 * 1.5, 1024.0 * 1024.0])
    assert assign_fpn_levels(boxes, areas, 3, 5, "eq2").tolist() == [5, 3]


@pytest.mark.parametrize("side,level", [(224, 4), (112, 3), (447, 4), (448, 5), (56, 3), (2000, 5)])
def test_eq1_worked_examples(side, level):
    boxes = torch.tensor([[10.0, 10.0, 10.0 + side, 10.0 + side]])
    assert assign_fpn_levels(boxes, 1.0, 3, 5, "eq1").tolist() == [level]


def test_assignment_rejects_unknown_rule_and_handles_empty_boxes():
    with pytest.raises(ValueError):
        assign_fpn_levels(torch.zeros(1, 4), 1.0, rule="eq3")
    assert assign_fpn_levels(torch.zeros(0, 4), 100.0).shape == (0,)
    assert assign_fpn_levels(torch.tensor([[5.0, 5.0, 5.0, 5.0]]), 100.0).tolist() == [3]  # degenerate box


def test_multilevel_roi_align_routes_each_roi_to_its_level():
    feats = [torch.full((2, 4, 64 // s, 64 // s), float(k)) for k, s in zip((3, 4, 5), (8, 16, 32))]
    feats[1][1] = 40.0  # image 1 of P4 differs: the batch index must be honoured
    rois = torch.tensor(
        [[0, 0, 0, 32, 32], [1, 0, 0, 32, 32], [1, 8, 8, 40, 40], [0, 0, 0, 16, 16]], dtype=torch.float32
    )
    levels = torch.tensor([4, 4, 5, 3])
    out = multilevel_roi_align(feats, rois, levels, [8, 16, 32], k_min=3, output_size=14)
    assert out.shape == (4, 4, 14, 14)
    assert out[:, 0, 7, 7].tolist() == [4.0, 40.0, 5.0, 3.0]
    assert multilevel_roi_align(feats, rois[:0], levels[:0], [8, 16, 32]).shape == (0, 4, 14, 14)


def test_sam_shape_and_gating():
    sam = SpatialAttention()
    x = torch.randn(3, 8, 14, 14)
    assert sam(x).shape == x.shape
    with torch.no_grad():
        sam.conv.weight.zero_()
    assert torch.allclose(sam(x), 0.5 * x)  # sigmoid(0) = 0.5 everywhere
    with torch.no_grad():
        sam.conv.weight.zero_()
        sam.conv.weight[0, 1, 1, 1] = 50.0  # attend to the channel max at the same pixel
    x = -torch.ones(1, 8, 14, 14)
    x[:, :, 3:6, 3:6] = 1.0  # "informative" pixels: positive max; the rest suppressed
    y = sam(x)
    assert torch.allclose(y[:, :, 4, 4], x[:, :, 4, 4], atol=1e-6)
    assert y[:, :, 10, 10].abs().max() < 1e-6
    # The attention map follows the paper's Eq. 3 on (mean, max) channel pooling.
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    assert torch.allclose(sam.attention(x), torch.sigmoid(sam.conv(pooled)))


def test_sag_mask_head_shapes_and_switches():
    head = SAGMaskHead(16, num_classes=3, num_convs=2, channels=8, sam=True)
    assert head(torch.randn(5, 16, 14, 14)).shape == (5, 3, 28, 28)
    assert head(torch.randn(0, 16, 14, 14)).shape == (0, 3, 28, 28)
    no_sam = SAGMaskHead(16, num_classes=3, num_convs=2, channels=8, sam=False)
    n_sam = sum(p.numel() for p in head.parameters()) - sum(p.numel() for p in no_sam.parameters())
    assert n_sam == 2 * 9  # SAM: one 3x3 conv 2 -> 1, no bias


def _rle_roundtrip(mask: np.ndarray) -> torch.Tensor:
    """A dense mask as the data layer would give it for an RLE annotation."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return torch.from_numpy(mask_utils.decode(rle))


def test_mask_targets_crop_dense_masks_any_format():
    m = np.zeros((60, 80), np.uint8)
    m[10:30, 20:60] = 1  # box [20, 10, 60, 30]
    gt = torch.stack([torch.zeros(60, 80, dtype=torch.uint8), _rle_roundtrip(m)])
    boxes = torch.tensor([[20.0, 10.0, 60.0, 30.0], [20.0, 10.0, 100.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    t = mask_targets(gt, boxes, torch.tensor([1, 1, 1]), size=28)
    assert t.shape == (3, 28, 28) and t.dtype == torch.float32
    assert t[0].min() == 1  # RoI = the object's box: all foreground
    assert t[1][:, :14].min() == 1 and t[1][:, 14:].max() == 0  # RoI twice as wide: left half
    assert t[2].max() == 0  # RoI off the object
    assert mask_targets(gt, boxes[:0], torch.zeros(0, dtype=torch.int64)).shape == (0, 28, 28)


def test_match_rois_and_mask_loss():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    props = torch.tensor([[0.0, 0, 10, 12], [50, 50, 60, 60], [21, 21, 40, 40]])
    keep, g = match_rois(props, gt, 0.5)
    assert keep.tolist() == [0, 2] and g.tolist() == [0, 1]
    assert match_rois(props, gt[:0], 0.5)[0].numel() == 0
    logits = torch.full((2, 3, 28, 28), -20.0, requires_grad=True)
    tgt = torch.zeros(2, 28, 28)
    assert mask_loss(logits, torch.tensor([1, 3]), tgt).item() < 1e-6
    wrong = torch.full((2, 3, 28, 28), -20.0)
    wrong[0, 1] = 20.0  # a confident mask in another class's channel does not count
    assert mask_loss(wrong, torch.tensor([1, 3]), tgt).item() < 1e-6
    assert mask_loss(wrong, torch.tensor([2, 3]), tgt).item() > 5
    empty = mask_loss(logits[:0], torch.zeros(0, dtype=torch.int64), tgt[:0])
    assert empty.item() == 0 and empty.requires_grad


def test_maskiou_targets_count_gt_outside_the_roi():
    tgt = torch.zeros(1, 28, 28)
    tgt[0, :, :14] = 1.0  # the GT fills the left half of the RoI (392 cells)
    perfect = tgt * 40 - 20  # logits: exactly the cropped GT
    one = torch.tensor([1.0], dtype=torch.float64)
    # GT entirely inside the RoI (mask ratio 1): IoU 1.
    assert maskiou_targets(perfect, tgt, one).item() == pytest.approx(1.0)
    # The same crop, but only half of the GT lies in the RoI (ratio 0.5): full area 784, IoU 0.5.
    assert maskiou_targets(perfect, tgt, one / 2).item() == pytest.approx(0.5)
    # Predicting the whole RoI: intersection 392, union 784.
    full = torch.full((1, 28, 28), 20.0)
    assert maskiou_targets(full, tgt, one).item() == pytest.approx(0.5)
    # Nothing predicted, nothing there (ratio 0): 0, not NaN (union floored at 1 cell, as official).
    assert maskiou_targets(-full, tgt * 0, one * 0).item() == 0.0
    # Official formula on a hand case: pred 100 cells, 60 of them on a GT crop of 80 cells
    # that is 40 % of the GT -> full 200, union 100 + 200 - 60 = 240, IoU 0.25.
    t2 = torch.zeros(1, 28, 28)
    t2.view(-1)[:80] = 1.0
    p2 = torch.full((1, 28, 28), -1.0)
    p2.view(-1)[20:120] = 1.0
    assert maskiou_targets(p2, t2, one * 0.4).item() == pytest.approx(60 / 240, rel=1e-12)


def test_maskiou_head_and_loss():
    head = MaskIoUHead(16, num_classes=4, num_convs=2, channels=8, fc_dim=32)
    pred = head(torch.randn(3, 16, 14, 14), torch.rand(3, 1, 28, 28))
    assert pred.shape == (3, 4)
    assert head.convs[0].in_channels == 17  # RoI features + the max-pooled mask
    target = torch.tensor([0.2, 0.5, 0.9])
    labels = torch.tensor([1, 4, 2])
    exact = pred.detach().clone()
    exact[torch.arange(3), labels - 1] = target
    assert maskiou_loss(exact, labels, target).item() == pytest.approx(0.0, abs=1e-12)
    # Official: sum(0.5 * d^2) / #positive targets = 0.5 * 0.01.
    assert maskiou_loss(exact + 0.1, labels, target).item() == pytest.approx(0.005, rel=1e-4)
    # A RoI with target 0 is left out of both the sum and the count.
    zero_t = torch.tensor([0.0, 0.5, 0.9])
    off = exact.clone()
    off[0, 0] = 0.7  # far from its (zero) target: ignored
    off[1, 3] = 0.3  # d = -0.2 -> 0.5 * 0.04 / 2 positives
    assert maskiou_loss(off, labels, zero_t).item() == pytest.approx(0.01, rel=1e-4)
    assert maskiou_loss(off, labels, torch.zeros(3)).item() == 0
    assert maskiou_loss(pred[:0], labels[:0], target[:0]).item() == 0


def test_maskiou_targets_polygon_and_rle_ground_truth_alike():
    # The official code computes the mask-scoring "mask ratio" from polygons and crashes on
    # RLE; here polygons give the official ratio and RLE a dense-mask ratio, and the two
    # agree closely on the same object.
    h, w = 64, 80
    poly = [[10.0, 10.0, 60.0, 12.0, 50.0, 50.0, 12.0, 40.0]]
    from_poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w)))
    rle = mask_utils.encode(np.asfortranarray(from_poly))  # the same object stored as RLE
    rle["counts"] = rle["counts"].decode("ascii")  # as in a COCO json file
    from_rle = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    boxes = torch.tensor([[8.0, 8.0, 40.0, 52.0], [10.0, 10.0, 60.0, 50.0]])  # the first cuts the object
    gt = torch.from_numpy(from_rle)[None]
    g = torch.zeros(2, dtype=torch.int64)
    logits = torch.full((2, 28, 28), 5.0)  # predict the whole RoI
    results = []
    for polys in ([[np.array(poly[0])]], None):
        t = mask_targets(gt, boxes, g, gt_polygons=polys)
        results.append(maskiou_targets(logits, t, mask_ratios(gt, boxes, g, polys)))
    assert torch.allclose(results[0], results[1], atol=0.03)
    for r in results:
        assert 0 < r[0] < r[1] < 1  # the cut RoI misses part of the object

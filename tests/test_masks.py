"""Compact prediction masks (:mod:`maskkit.masks`): every way of reading them out (RLE, crops,
areas, tight boxes, dense, the overlay, COCO results) gives what the dense masks give."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maskkit.evaluation import predictions_to_coco_results
from maskkit.masks import BoxMasks, crop_to_rle, mask_areas, masks_to_rle
from maskkit.models.sharpmask.model import mask_boxes
from maskkit.structures import empty_prediction, select_instances
from maskkit.viz import draw_instances


def _encode(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def test_crop_rle_is_the_rle_of_the_full_mask():
    g = torch.Generator().manual_seed(0)
    for k in range(400):
        h, w = (int(v) for v in torch.randint(1, 30, (2,), generator=g))
        r0, c0 = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
        hh = int(torch.randint(0, h - r0 + 1, (1,), generator=g))
        ww = int(torch.randint(0, w - c0 + 1, (1,), generator=g))
        if k % 3 == 0:  # full-height crops: runs continue from one column into the next
            r0, hh = 0, h
        crop = torch.rand(hh, ww, generator=g) < (0.5 if k % 5 else 0.97)
        full = np.zeros((h, w), bool)
        full[r0 : r0 + hh, c0 : c0 + ww] = crop.numpy()
        rle = crop_to_rle(crop, r0, c0, h, w)
        assert rle["size"] == [h, w] and rle["counts"] == _encode(full), (h, w, r0, c0, hh, ww)


def _masks(n=6, h=50, w=70, zero_outside=True, seed=0) -> BoxMasks:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 8  # some boxes leave the image
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 1], 1)
    probs = torch.rand(n, 28, 28, generator=g)
    probs[1] = 0  # an empty mask
    return BoxMasks(probs, boxes, (h, w), 0.5, zero_outside)


@pytest.mark.parametrize("zero_outside", [True, False])
def test_readouts_agree_with_the_dense_masks(zero_outside):
    m = _masks(zero_outside=zero_outside)
    dense = m.to_dense()  # bool [N, 1, H, W]
    assert dense.dtype == torch.bool and dense.shape == m.shape == (6, 1, 50, 70) and len(m) == 6
    assert torch.equal(dense, m.probabilities() >= 0.5)
    assert [r["counts"] for r in m.to_rle()] == [_encode(d[0].numpy()) for d in dense]
    assert masks_to_rle(m) == masks_to_rle(dense)  # compact and dense give the same results
    assert m.area().tolist() == dense.flatten(1).sum(1).tolist() == mask_areas(dense).tolist()
    fallback = torch.rand(6, 4)
    assert torch.equal(m.tight_boxes(fallback), mask_boxes(dense, fallback))
    for r0, c0, crop in m.crops():  # crops lie inside the image
        assert 0 <= r0 and r0 + crop.shape[0] <= 50 and 0 <= c0 and c0 + crop.shape[1] <= 70
    assert np.array_equal(np.asarray(m), dense.numpy())


def test_subsets_and_indexing_follow_the_dense_tensor():
    m = _masks()
    dense = m.to_dense()
    keep = torch.tensor([True, False, True, True, False, True])
    assert torch.equal(m[keep].to_dense(), dense[keep])
    order = torch.tensor([3, 0, 5])
    assert torch.equal(m[order].to_dense(), dense[order]) and torch.equal(m[[2, 4]].to_dense(), dense[[2, 4]])
    assert torch.equal(m[1:4].to_dense(), dense[1:4])
    assert (
        torch.equal(m[2], dense[2])
        and torch.equal(m[:, 0], dense[:, 0])
        and torch.equal(m[0, 0, 5:9], dense[0, 0, 5:9])
    )
    assert len(m[torch.zeros(6, dtype=torch.bool)]) == 0


def test_select_instances_and_the_empty_prediction():
    m = _masks()
    pred = {"boxes": m.boxes, "scores": torch.linspace(1, 0, 6), "masks": m, "names": list("abcdef"), "k": 3}
    sel = select_instances(pred, pred["scores"] >= 0.5)
    assert len(sel["masks"]) == 3 and sel["names"] == ["a", "b", "c"] and sel["k"] == 3
    assert torch.equal(sel["masks"].to_dense(), m.to_dense()[:3])
    empty = empty_prediction(6, 9)
    assert (
        empty["masks"].shape == (0, 1, 6, 9)
        and empty["masks"].to_rle() == []
        and empty["masks"].to_dense().shape == (0, 1, 6, 9)
    )


def test_overlay_and_results_are_the_same_for_compact_and_dense_masks():
    m = _masks(n=5, h=60, w=80)
    image = torch.rand(3, 60, 80, generator=torch.Generator().manual_seed(1))
    base = {"boxes": m.boxes, "labels": torch.tensor([1, 2, 1, 2, 1]), "scores": torch.linspace(0.9, 0.5, 5)}
    compact, dense = {**base, "masks": m}, {**base, "masks": m.to_dense()}
    assert torch.equal(draw_instances(image, compact, ["a", "b"], 0.6), draw_instances(image, dense, ["a", "b"], 0.6))
    assert predictions_to_coco_results([compact], [3], {1: 5, 2: 7}) == predictions_to_coco_results(
        [dense], [3], {1: 5, 2: 7}
    )


def test_threshold_must_be_a_probability():
    with pytest.raises(ValueError, match="threshold"):
        BoxMasks(torch.rand(1, 4, 4), torch.zeros(1, 4), (5, 5), threshold=0.0)

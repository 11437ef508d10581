"""Data-contract helpers: batched mask pasting, RLE encoding, mask IoU."""

import numpy as np
import torch
from pycocotools import mask as mask_utils

from maskkit.structures import empty_prediction, mask_iou, masks_to_rle, paste_masks_in_image, rle_to_mask


def test_paste_places_mask_inside_its_box():
    m = torch.zeros(2, 8, 8)
    m[0, 2:6, 2:6] = 1  # the central half of box 0
    m[1] = 1  # all of box 1
    boxes = torch.tensor([[10.0, 10, 26, 26], [0, 0, 4, 4]])
    out = paste_masks_in_image(m, boxes, (40, 40))
    assert out.shape == (2, 1, 40, 40)
    b0 = out[0, 0] >= 0.5
    ys, xs = torch.nonzero(b0, as_tuple=True)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (14, 21, 14, 21)
    assert b0.sum() == 64
    assert (out[1, 0] >= 0.5).sum() == 16 and (out[1, 0, 4:, :] == 0).all()


def test_paste_matches_per_mask_resize():
    """Batched paste equals resizing each mask to its (integer) box and placing it."""
    torch.manual_seed(0)
    masks = torch.rand(3, 28, 28)
    boxes = torch.tensor([[3.0, 5, 59, 33], [0, 0, 28, 28], [20, 10, 48, 66]])
    out = paste_masks_in_image(masks, boxes, (70, 64))
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        ref = torch.nn.functional.interpolate(
            masks[i][None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
        )[0, 0]
        inner = out[i, 0, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]  # borders differ: zero padding vs edge clamp
        torch.testing.assert_close(inner, ref[1:-1, 1:-1], atol=1e-5, rtol=0)
        outside = out[i, 0].clone()
        outside[y0:y1, x0:x1] = 0
        assert outside.abs().max() < 1e-6


def test_paste_empty():
    assert paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7)).shape == (0, 1, 5, 7)


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 17, 23)) > 0.5
    rles = masks_to_rle(torch.from_numpy(masks))
    assert all(isinstance(r["counts"], str) for r in rles)
    for r, m in zip(rles, masks):
        assert (rle_to_mask(r) == m).all()
        assert mask_utils.area({**r, "counts": r["counts"].encode()}) == m.sum()
    probs = torch.from_numpy(masks.astype(np.float32) * 0.6)[:, None]
    assert [rle_to_mask(r).sum() for r in masks_to_rle(probs, threshold=0.5)] == [m.sum() for m in masks]
    assert masks_to_rle(torch.zeros(0, 4, 4)) == []


def test_mask_iou():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2] = True
    a[1] = True
    iou = mask_iou(a, a[:1])
    torch.testing.assert_close(iou, torch.tensor([[1.0], [0.5]]))


def test_empty_prediction_is_well_formed():
    p = empty_prediction(6, 9)
    assert p["boxes"].shape == (0, 4) and p["masks"].shape == (0, 1, 6, 9)
    assert p["labels"].dtype == torch.int64 and p["mask_scores"].shape == (0,)

"""Transforms: shortest-side resize with scale jitter, flip, sanitising, and the test-time
resize whose inverse maps boxes back to original image coordinates."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from maskkit.config import DataConfig
from maskkit.data.transforms import (
    ResizeShortestSide,
    boxes_to_original,
    build_test_transforms,
    build_train_transforms,
    resize_for_test,
    test_resize_size,
)


def _sample(h: int = 60, w: int = 80, boxes=((10, 20, 40, 50), (50, 5, 52, 8), (0, 0, 80, 60)), crowd=(0, 0, 1)):
    """Image + target whose masks fill their boxes exactly (so masks_to_boxes(masks) == boxes)."""
    n = len(boxes)
    masks = torch.zeros((n, h, w), dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = 1
    image = tv_tensors.Image(torch.rand(3, h, w))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(1, n + 1, dtype=torch.int64),
        "masks": tv_tensors.Mask(masks),
        "iscrowd": torch.tensor(crowd, dtype=torch.int64),
        "area": masks.flatten(1).sum(1).to(torch.float32),
        "image_id": 7,
        "orig_size": (h, w),
    }
    return image, target


def test_test_resize_size_rule():
    assert test_resize_size(480, 640, 800, 1333) == (800, 1067)
    assert test_resize_size(100, 1000, 800, 1333) == (133, 1333)  # longer side capped
    assert test_resize_size(480, 640, 0, 1333) == (480, 640)


def test_resize_choice_and_range_sampling():
    image, target = _sample()
    choice = ResizeShortestSide((30, 45, 90), max_size=1000, sampling="choice")
    seen = {choice(image, target)[0].shape[-2] for _ in range(40)}
    assert seen == {30, 45, 90}
    ranged = ResizeShortestSide((30, 40), max_size=1000, sampling="range")
    seen = {ranged(image, target)[0].shape[-2] for _ in range(60)}
    assert seen <= set(range(30, 41)) and len(seen) >= 5
    capped = ResizeShortestSide(300, max_size=200)
    out, t = capped(image, target)
    assert out.shape[-2:] == (150, 200) and t["masks"].shape[-2:] == (150, 200)
    assert t["boxes"].canvas_size == (150, 200)
    with pytest.raises(ValueError):
        ResizeShortestSide((30,), 100, sampling="uniform")


def test_resize_moves_image_boxes_and_masks_together():
    image, target = _sample()
    out, t = ResizeShortestSide(120, max_size=1000)(image, target)  # x2
    assert out.shape == (3, 120, 160) and t["masks"].dtype == torch.uint8
    assert torch.allclose(t["boxes"], target["boxes"] * 2)
    assert torch.allclose(masks_to_boxes(t["masks"]) + torch.tensor([0, 0, 1, 1]), t["boxes"])
    assert t["image_id"] == 7 and t["orig_size"] == (60, 80)


def test_train_transforms_flip_and_sanitize_keep_fields_aligned():
    cfg = DataConfig(min_size_train=(30,), max_size_train=1000, hflip_prob=1.0)
    image, target = _sample()
    out, t = build_train_transforms(cfg)(image, target)  # x0.5 then flipped
    assert out.shape == (3, 30, 40)
    assert torch.allclose(out, build_test_transforms(30, 1333)(image, target)[0].flip(-1))
    # the 2x3 px box becomes 1x1.5 px: width 1 is kept; nothing under 1 px here yet
    n = len(t["labels"])
    assert all(len(t[k]) == n for k in ("boxes", "masks", "iscrowd", "area"))
    # flipped box x0 = W - old x1
    assert torch.allclose(t["boxes"][0], torch.tensor([40 - 20.0, 10, 40 - 5.0, 25]))
    m = t["masks"][0]
    assert m[:, :20].sum() == 0 and m[:, 20:35].sum() > 0  # mask mirrored with its box
    assert t["iscrowd"][t["labels"] == 3].tolist() == [1]  # crowd kept, still marked


def test_sanitize_drops_subpixel_boxes_with_their_fields():
    cfg = DataConfig(min_size_train=(15,), max_size_train=1000, hflip_prob=0.0)  # x0.25
    image, target = _sample()
    out, t = build_train_transforms(cfg)(image, target)
    assert out.shape == (3, 15, 20)
    assert t["labels"].tolist() == [1, 3]  # the 2x3 px box (now 0.5x0.75) is gone
    assert t["masks"].shape == (2, 15, 20) and t["iscrowd"].tolist() == [0, 1]
    assert torch.equal(t["area"], target["area"][[0, 2]])


def test_test_transforms_are_deterministic_and_keep_everything():
    image, target = _sample()
    tf = build_test_transforms(15, 1000)
    (a, ta), (b, tb) = tf(image, target), tf(image, target)
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    assert len(ta["labels"]) == 3


@pytest.mark.parametrize("size", [(480, 640), (333, 500), (1000, 120)])
def test_resize_for_test_inverse_round_trips_boxes(size):
    h, w = size
    g = torch.Generator().manual_seed(0)
    xy0 = torch.rand(50, 2, generator=g) * torch.tensor([w, h]) * 0.8
    wh = torch.rand(50, 2, generator=g) * torch.tensor([w, h]) * 0.2 + 1
    boxes = torch.cat([xy0, xy0 + wh], 1)  # [50, 4]
    image = torch.rand(3, h, w)
    resized, scale = resize_for_test(image, 800, 1333)
    assert resized.shape[-2:] == test_resize_size(h, w, 800, 1333)
    # boxes as a model would predict them on the resized image (via the tv_tensors path)
    bb = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
    _, t = ResizeShortestSide(800, 1333)(tv_tensors.Image(image), {"boxes": bb})
    back = boxes_to_original(t["boxes"].as_subclass(torch.Tensor), scale, (h, w))
    assert (back - boxes).abs().max() < 1.0


def test_boxes_to_original_clips_to_the_image():
    back = boxes_to_original(torch.tensor([[-5.0, 10, 900, 2000]]), (2.0, 2.0), (300, 400))
    assert back.tolist() == [[0.0, 5.0, 400.0, 300.0]]
    img, scale = resize_for_test(torch.rand(3, 800, 1000), 800, 1333)
    assert scale == (1.0, 1.0) and img.shape == (3, 800, 1000)

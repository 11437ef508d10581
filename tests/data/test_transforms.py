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
)
from maskkit.geometry import test_resize_size


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


def test_polygons_follow_resize_and_flip_exactly_and_are_filtered_with_their_instance():
    # (issue #10 item 4) Polygon vertices ride along as PolygonVertices: scaled by new/old and
    # flipped as x -> W - x (continuous coordinates, as the boxes), never W - 1 - x.
    from maskkit.data.transforms import PolygonVertices
    from maskkit.structures import instance_polygons

    image, target = _sample(boxes=((10, 20, 40, 50), (50, 5, 52, 8)), crowd=(0, 0))
    target["polygons"] = PolygonVertices(
        torch.tensor(
            [[10.0, 20.0], [40.0, 20.0], [40.0, 50.0], [10.0, 50.0], [50.0, 5.0], [52.0, 5.0], [52.0, 8.0]],
            dtype=torch.float64,
        ),
        canvas_size=(60, 80),
    )
    target["polygon_parts"] = torch.tensor([[0, 4], [1, 3]])
    target["ann_index"] = torch.tensor([0, 1])
    cfg = DataConfig(min_size_train=(120,), max_size_train=1000, hflip_prob=1.0)
    out_img, out = build_train_transforms(cfg)(image, target)
    assert out_img.shape[-2:] == (120, 160) and out["polygons"].canvas_size == (120, 160)
    assert out["polygons"].dtype == torch.float64
    x = out["polygons"][:4, 0].as_subclass(torch.Tensor)
    torch.testing.assert_close(x, torch.tensor([140.0, 80.0, 80.0, 140.0], dtype=torch.float64))  # 160 - 2x
    polys = instance_polygons(out, 2, (120, 160))  # the 2 x 3 px box became 4 x 6 px: kept, but ...
    assert [len(p) for p in polys] == [1, 1] and polys[1][0].tolist() == [60.0, 10.0, 56.0, 10.0, 56.0, 16.0]
    # The engine moves targets to the device as plain tensors: the packed form still unpacks.
    plain = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    assert [p[0].tolist() for p in instance_polygons(plain, 2, (120, 160))] == [p[0].tolist() for p in polys]
    # ... a box under 1 px after the resize would be dropped, and its polygon with it (ann_index).
    tiny_cfg = DataConfig(min_size_train=(20,), max_size_train=1000, hflip_prob=0.0)
    _, small = build_train_transforms(tiny_cfg)(image, target)
    kept = small["ann_index"].tolist()
    assert kept == [0] and len(instance_polygons(small, len(kept), (20, 27))) == 1
    with pytest.raises(ValueError, match="polygons are for"):
        instance_polygons(small, 1, (60, 80))  # polygons not moved with the image


def test_masks_resize_centre_aligned_not_shifted():
    # Downsampling 12 -> 4 samples source pixel floor((i + 0.5) * 3) = 1, 4, 7, 10 (centre-aligned,
    # as PIL / detectron2); torch's legacy "nearest" samples floor(i * 3) = 0, 3, 6, 9, shifted
    # up-left, and would miss a 1-px column at x = 7 entirely.
    image = tv_tensors.Image(torch.rand(3, 12, 12))
    m = torch.zeros(1, 12, 12, dtype=torch.uint8)
    m[0, :, 7] = 1
    target = {"masks": tv_tensors.Mask(m)}
    _, out = ResizeShortestSide((4,), 1000)(image, target)
    assert out["masks"][0, 0].tolist() == [0, 0, 1, 0]

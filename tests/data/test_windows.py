"""DeepMask/SharpMask window sampler: jitter statistics, score positives/negatives, the negative
rejection rule, border padding, flips, homogeneous batches, crowd handling, COCO input."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from maskkit.config import WindowSamplerConfig
from maskkit.data.windows import WindowSampler, collate_windows, crop_window, is_near_positive
from maskkit.errors import DataError, MaskkitError

MEAN = (0.485, 0.456, 0.406)


def _item(h, w, boxes, crowd=None, color=None, seed=0):
    """(image, target) with filled rectangles ``boxes`` (xyxy ints)."""
    g = torch.Generator().manual_seed(seed)
    image = (
        torch.rand(3, h, w, generator=g) if color is None else torch.tensor(color).view(3, 1, 1).expand(3, h, w).clone()
    )
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = 1
    n = len(boxes)
    return image, {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.arange(1, n + 1, dtype=torch.int64) % 2 + 1,
        "masks": masks,
        "iscrowd": torch.tensor(crowd or [0] * n, dtype=torch.int64),
        "image_id": seed,
    }


DATA = [
    _item(240, 320, [(20, 30, 80, 70), (150, 100, 260, 220)], seed=1),
    _item(200, 200, [(60, 60, 100, 150)], seed=2),
    _item(300, 260, [(10, 10, 50, 40), (120, 150, 250, 290), (130, 20, 170, 60)], seed=3),
]


def _label_box(label):
    """Bounding box (x0, y0, x1, y1) in window px of the +1 region of a {-1, +1} label."""
    ys, xs = torch.nonzero(label > 0, as_tuple=True)
    return xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1


def test_mask_samples_centred_and_scaled_within_jitter():
    cfg = WindowSamplerConfig(mask_batch_prob=1.0)
    s = WindowSampler(DATA, cfg, batch_size=16, length=96, seed=0)
    offsets, octaves = [], []
    for i in range(len(s)):
        crop, info = s[i]
        assert crop.shape == (3, 192, 192) and info["mask"].shape == (160, 160) and info["kind"] == "mask"
        assert info["score"] == 1.0 and info["instance"] >= 0
        x0, y0, x1, y1 = _label_box(info["mask"])
        # the object is fully inside the window (92 * 2^0.25 + 16 < 80 px from the centre)
        assert x0 > 0 and y0 > 0 and x1 < 160 and y1 < 160
        offsets += [(x0 + x1) / 2 - 80, (y0 + y1) / 2 - 80]
        octaves.append(math.log2(max(x1 - x0, y1 - y0) / 92))
    offsets, octaves = np.array(offsets), np.array(octaves)
    assert np.abs(offsets).max() <= 16 + 1  # +-16 px shift (1 px rasterisation)
    assert np.abs(octaves).max() <= 0.25 + 0.02  # +-0.25 octave scale jitter
    assert offsets.std() > 5 and octaves.max() - octaves.min() > 0.3  # the jitter is really drawn


def test_score_samples_half_positive_centred_negatives_respect_rejection():
    cfg = WindowSamplerConfig(mask_batch_prob=0.0)
    s = WindowSampler(DATA, cfg, batch_size=32, length=128, seed=1)
    grid = np.arange(-3, 2.001, 0.25)
    pos = 0
    for i in range(len(s)):
        crop, info = s[i]
        assert info["kind"] == "score"
        if info["score"] > 0:
            pos += 1
            x0, y0, x1, y1 = _label_box(info["mask"])
            assert abs((x0 + x1) / 2 - 80) <= 1 and abs((y0 + y1) / 2 - 80) <= 1  # centred
            assert abs(max(x1 - x0, y1 - y0) - 92) <= 1.5  # canonical scale, no jitter
        else:
            assert torch.all(info["mask"] == -1)
            sc = info["scale"]
            assert np.isclose(grid, math.log2(sc)).any()  # 2^-3 .. 2^2 in 0.25 steps
            win = info["window"]
            cx, cy = float(win[0] + win[2]) / 2, float(win[1] + win[3]) / 2
            boxes = DATA[info["item"]][1]["boxes"]
            for b in boxes.tolist():
                d = max(abs((b[0] + b[2]) / 2 - cx), abs((b[1] + b[3]) / 2 - cy)) * sc
                octave = abs(math.log2(max(b[2] - b[0], b[3] - b[1]) * sc / 92))
                assert d > 48 or octave > 1.0, (info, b)
    assert 0.35 < pos / len(s) < 0.65


def test_rejection_rule_by_hand():
    cfg = WindowSamplerConfig()
    box = torch.tensor([[100.0, 100.0, 192.0, 150.0]])  # longest side 92, centre (146, 125)
    assert is_near_positive((146.0, 125.0), 1.0, box, cfg)
    assert is_near_positive((146.0 + 47, 125.0 - 40), 1.0, box, cfg)  # within 48 px (max-norm)
    assert not is_near_positive((146.0 + 49, 125.0), 1.0, box, cfg)
    assert not is_near_positive((146.0, 125.0), 2.5, box, cfg)  # 230 px in the window: > 1 octave
    assert is_near_positive((146.0 + 10, 125.0), 0.6, box, cfg)  # 55 px: within an octave
    assert not is_near_positive((0.0, 0.0), 1.0, torch.zeros(0, 4), cfg)


def test_windows_at_image_borders_are_padded_with_the_mean():
    color = (0.9, 0.1, 0.2)
    data = [_item(120, 140, [(0, 0, 40, 30)], color=color)]  # object in the top-left corner
    cfg = WindowSamplerConfig(mask_batch_prob=1.0, hflip_prob=0.0)
    s = WindowSampler(data, cfg, batch_size=4, length=8, pixel_mean=MEAN)
    for i in range(len(s)):
        crop, info = s[i]
        sc, win = info["scale"], info["window"]
        # crop pixel p covers image coordinate x = crop_x0 + (p + 0.5) / scale
        crop_x0 = float(win[0]) - 16 / sc
        crop_y0 = float(win[1]) - 16 / sc
        xs = crop_x0 + (torch.arange(192) + 0.5) / sc
        ys = crop_y0 + (torch.arange(192) + 0.5) / sc
        outside = (xs[None, :] < -2) | (ys[:, None] < -2) | (xs[None, :] > 142) | (ys[:, None] > 122)  # [192, 192]
        inside = (xs[None, :] > 2) & (ys[:, None] > 2) & (xs[None, :] < 138) & (ys[:, None] < 118)
        assert outside.any() and inside.any()
        for c in range(3):
            assert torch.allclose(crop[c][outside], torch.tensor(MEAN[c]), atol=1e-5)
            assert torch.allclose(crop[c][inside], torch.tensor(color[c]), atol=1e-5)
        # the label is the object's corner region; outside the image it is background
        lab = info["mask"]
        wx = float(win[0]) + (torch.arange(160) + 0.5) / sc
        wy = float(win[1]) + (torch.arange(160) + 0.5) / sc
        assert torch.all(lab[(wy[:, None] < -1) | (wx[None, :] < -1)] == -1)
        obj = (wx[None, :] > 1) & (wx[None, :] < 39) & (wy[:, None] > 1) & (wy[:, None] < 29)
        assert torch.all(lab[obj] == 1)


def test_flip_mirrors_crop_and_label():
    cfg = WindowSamplerConfig(mask_batch_prob=1.0)
    a = WindowSampler(DATA, replace(cfg, hflip_prob=0.0), batch_size=4, length=4, seed=5)
    b = WindowSampler(DATA, replace(cfg, hflip_prob=1.0), batch_size=4, length=4, seed=5)
    for i in range(4):
        (ca, ia), (cb, ib) = a[i], b[i]
        assert not ia["flipped"] and ib["flipped"]
        assert torch.equal(ca.flip(-1), cb) and torch.equal(ia["mask"].flip(-1), ib["mask"])


def test_batches_are_homogeneous_and_deterministic():
    cfg = WindowSamplerConfig(mask_batch_prob=0.5)
    s = WindowSampler(DATA, cfg, batch_size=4, length=40, seed=2)
    loader = torch.utils.data.DataLoader(s, batch_size=s.batch_size, shuffle=False, collate_fn=collate_windows)
    kinds = []
    for crops, t in loader:
        assert crops.shape == (4, 3, 192, 192) and t["masks"].shape == (4, 160, 160) and t["scores"].shape == (4,)
        kinds.append(t["kind"])
        if t["kind"] == "mask":
            assert torch.all(t["scores"] == 1)
    assert set(kinds) == {"mask", "score"}
    c1, i1 = s[7]
    c2, i2 = s[7]
    assert torch.equal(c1, c2) and torch.equal(i1["mask"], i2["mask"])
    s.set_epoch(1)
    assert not torch.equal(s[7][0], c1)
    with pytest.raises(MaskkitError, match="all-mask or all-score"):
        collate_windows([(c1, dict(i1, kind="mask")), (c2, dict(i2, kind="score"))])


def test_crowd_and_tiny_instances_are_never_positives():
    data = [_item(200, 200, [(10, 10, 90, 90), (100, 100, 108, 108), (120, 20, 190, 90)], crowd=[1, 0, 0])]
    s = WindowSampler(data, WindowSamplerConfig(mask_batch_prob=1.0), batch_size=8, length=16)
    assert s.index == {2: [(0, 2)]}  # the crowd region and the 8x8 (64 px) object are excluded
    assert {s[i][1]["instance"] for i in range(len(s))} == {2}
    with pytest.raises(DataError, match="no instance usable"):
        WindowSampler([_item(100, 100, [(0, 0, 5, 5)])], WindowSamplerConfig())


def test_crop_window_is_an_exact_copy_at_scale_one():
    image = torch.rand(3, 50, 60)
    crop = crop_window(image, (30.0, 25.0), 1.0, 32, 0.5)
    torch.testing.assert_close(crop, image[:, 9:41, 14:46])


def test_crop_window_equals_roi_align():
    """The separable crop is torchvision's roi_align (aligned, adaptive sampling) with a fill:
    zooming in and out, windows past every border, odd sizes (float64: equal to rounding)."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        h, w = torch.randint(20, 200, (2,), generator=g).tolist()
        image = torch.rand(3, h, w, generator=g, dtype=torch.float64)
        fill = torch.rand(3, generator=g, dtype=torch.float64)
        cx, cy = (float(torch.empty(1, dtype=torch.float64).uniform_(-50, n + 50, generator=g)) for n in (w, h))
        scale = 2 ** float(torch.empty(1).uniform_(-3, 2, generator=g))
        size = int(torch.randint(8, 120, (1,), generator=g))
        half = size / (2 * scale)
        box = torch.tensor([[0.0, cx - half, cy - half, cx + half, cy + half]], dtype=torch.float64)
        ref = roi_align((image - fill[:, None, None])[None], box, (size, size), 1.0, 0, True)[0] + fill[:, None, None]
        torch.testing.assert_close(crop_window(image, (cx, cy), scale, size, fill), ref, rtol=0, atol=1e-10)


def test_rle_targets_give_the_same_windows_as_dense_masks(coco_tiny):
    """Mask windows cut from an RLE target's box crop equal those of its decoded masks."""
    from maskkit.data.coco import CocoDataset
    from maskkit.masks import dense_rows

    ds = CocoDataset(coco_tiny / "annotations" / "instances_val2017.json", coco_tiny / "val2017")
    items = [ds[i] for i in range(4)]
    dense = [(im, {**t, "masks": dense_rows(t["masks"], list(range(len(t["masks"]))))}) for im, t in items]
    cfg = WindowSamplerConfig(mask_batch_prob=1.0)
    a, b = (WindowSampler(d, cfg, batch_size=4, length=24, seed=3) for d in (items, dense))
    for i in range(len(a)):
        (ca, ia), (cb, ib) = a[i], b[i]
        torch.testing.assert_close(ca, cb)
        torch.testing.assert_close(ia["mask"], ib["mask"])


def test_sampler_on_coco_subset(coco_tiny):
    from maskkit.data.coco import CocoDataset

    ds = CocoDataset(coco_tiny / "annotations" / "instances_val2017.json", coco_tiny / "val2017")
    s = WindowSampler(ds, WindowSamplerConfig(mask_batch_prob=0.5), batch_size=4, length=8, seed=0)
    assert len(s.labels) > 1  # indexed from the annotations, per category
    for i in range(len(s)):
        crop, info = s[i]
        assert crop.shape == (3, 192, 192) and 0 <= crop.min() and crop.max() <= 1
        if info["kind"] == "mask":
            ann = ds.coco.imgToAnns[ds.image_ids[info["item"]]][info["instance"]]
            assert not ann.get("iscrowd", 0) and ann["area"] >= 100


def test_image_cache_gives_the_same_items_within_its_budget():
    """``cache_mb``: decoded images kept in memory (8-bit when exact, else as is) change no item; the
    cache stops growing at its budget."""
    eight_bit = [(torch.round(im * 255) / 255, t) for im, t in DATA[:2]] + DATA[2:]  # the last one not 8-bit
    plain = WindowSampler(eight_bit, WindowSamplerConfig(), batch_size=8, length=64, seed=3)
    cached = WindowSampler(eight_bit, WindowSamplerConfig(cache_mb=2), batch_size=8, length=64, seed=3)
    for _ in range(2):  # the second pass reads the cache
        for i in range(len(plain)):
            (a, ia), (b, ib) = plain[i], cached[i]
            assert torch.equal(a, b) and torch.equal(ia["mask"], ib["mask"]) and ia["window"].equal(ib["window"])
    assert set(cached._cache) == {0, 1, 2}
    assert [im.dtype for im, _ in (cached._cache[k] for k in (0, 1, 2))] == [torch.uint8, torch.uint8, torch.float32]
    small = WindowSampler(eight_bit, WindowSamplerConfig(cache_mb=0), batch_size=8, length=16, seed=3)
    [small[i] for i in range(len(small))]
    assert small._cache == {}
    one = WindowSampler(DATA, replace(WindowSamplerConfig(), cache_mb=1), batch_size=8, length=64, seed=3)
    one.cfg.cache_mb = 240 * 320 * 3 * 4 / 2**20 + 1e-6  # room for the first image (float) only
    one._load(0), one._load(1), one._load(2)
    assert list(one._cache) == [0]

"""Training targets keep their masks as RLE (issue #14 item 1): the pixels they give after the
training transforms, and the CenterMask losses they give, equal those of dense masks exactly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.transforms import v2

from maskkit.data.coco import CocoDataset, resolve_data
from maskkit.data.rle_masks import RLEMasks, rle_crop
from maskkit.data.synthetic import CATEGORIES, generate
from maskkit.data.transforms import build_train_transforms
from maskkit.errors import DataError
from maskkit.models.zoo import build_model, get_config


def test_rle_crop_is_the_bounding_box_of_the_decoded_mask():
    rng = np.random.default_rng(0)
    for k in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = np.zeros((h, w), np.uint8)
        if k % 5:
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            m[y0 : y0 + int(rng.integers(1, h + 1)), x0 : x0 + int(rng.integers(1, w + 1))] = 1
            m &= (rng.random((h, w)) < (0.7 if k % 3 else 1.0)).astype(np.uint8)  # k % 3 == 0: full columns
        rle = mask_utils.encode(np.asfortranarray(m))
        for r in (rle, {"size": [h, w], "counts": rle["counts"].decode("ascii")}):
            r0, c0, crop = rle_crop(r, h, w)
            if not m.any():
                assert crop.size == 0
                continue
            ys, xs = np.nonzero(m)
            assert (r0, c0) == (ys.min(), xs.min())
            assert np.array_equal(crop, m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(bool))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("syn") / "d", num_train=6, num_val=1, seed=5, size=96, progress=False)


def _pairs(root, split, cfg_data, n):
    """The same items of a split with RLE and with dense masks, through the training transforms
    (resize jitter, flip, clamp + sanitize) with the same random draws."""
    ann, images = resolve_data(root, split)
    rle = CocoDataset(ann, images, transforms=build_train_transforms(cfg_data))
    dense = CocoDataset(ann, images, transforms=build_train_transforms(cfg_data), dense_masks=True)
    for i in range(n):
        torch.manual_seed(i)
        a = rle[i]
        torch.manual_seed(i)
        yield a, dense[i]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' own, under numpy 2
@pytest.mark.parametrize("source", ["synthetic", "coco"])
def test_rle_targets_through_the_train_transforms_equal_dense_targets(source, synthetic, request):
    root, split = (synthetic, "train") if source == "synthetic" else (request.getfixturevalue("coco_tiny"), "val")
    cfg = get_config("centermask_lite_demo").data
    cfg.hflip_prob = 0.5
    for (img_r, t_r), (img_d, t_d) in _pairs(root, split, cfg, 6):
        assert torch.equal(img_r, img_d) and isinstance(t_r["masks"], RLEMasks)
        assert torch.equal(t_r["boxes"], t_d["boxes"]) and torch.equal(t_r["labels"], t_d["labels"])
        assert t_r["masks"].image_size == tuple(img_r.shape[-2:])
        assert torch.equal(t_r["masks"].to_dense(), t_d["masks"].as_subclass(torch.Tensor))
        assert t_r["masks"].area().tolist() == t_d["masks"].flatten(1).sum(1).tolist()


def test_rle_masks_survive_pickling_and_copies(synthetic):
    ds = CocoDataset(*resolve_data(synthetic, "train"), transforms=v2.RandomHorizontalFlip(p=1.0))
    masks = ds[0][1]["masks"]
    for other in (pickle.loads(pickle.dumps(masks)), masks.clone(), masks.to("cpu")):  # DataLoader workers
        assert isinstance(other, RLEMasks) and other.ops == masks.ops
        assert torch.equal(other.to_dense(), masks.to_dense())
    assert torch.equal(masks[[1, 0]].to_dense(), masks.to_dense()[[1, 0]])


def test_other_geometric_transforms_are_refused(synthetic):
    ds = CocoDataset(*resolve_data(synthetic, "train"), transforms=v2.RandomVerticalFlip(p=1.0))
    with pytest.raises(DataError, match="dense_masks=True"):
        ds[0]
    dense = CocoDataset(*resolve_data(synthetic, "train"), transforms=v2.RandomVerticalFlip(p=1.0), dense_masks=True)
    assert dense[0][1]["masks"].shape[0] == len(dense[0][1]["labels"])


def test_centermask_losses_are_the_same_with_rle_or_dense_targets(synthetic):
    """Synthetic masks are RLE (no polygons): the mask targets and MaskIoU ratios come from the
    masks' pixels, made per matched GT from the RLE, and must equal the dense computation."""
    cfg = get_config("centermask_lite_demo", len(CATEGORIES), ["model.min_size_test=96", "model.max_size_test=96"])
    ann, images = resolve_data(synthetic, "train")
    batches = []
    for dense in (False, True):
        ds = CocoDataset(ann, images, transforms=build_train_transforms(cfg.data), dense_masks=dense)
        torch.manual_seed(0)
        batches.append([ds[i] for i in range(3)])
    losses = []
    for batch in batches:
        torch.manual_seed(0)
        model = build_model(cfg.model).train()
        torch.manual_seed(1)
        losses.append(model([img for img, _ in batch], [t for _, t in batch]))
    assert set(losses[0]) == set(losses[1]) and "loss_maskiou" in losses[0]
    for k in losses[0]:
        assert torch.equal(losses[0][k], losses[1][k]), k

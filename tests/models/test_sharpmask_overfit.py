"""Short two-stage overfit on a few synthetic images: DeepMask (stage 1), then SharpMask
refinement on the frozen DeepMask (stage 2). The full-image proposals must recover the training
objects: class-agnostic segmentation AR@10 far above an untrained model's.

A minimal training loop lives here (the engine has its own); the proposals are scored with the
evaluation engine's class-agnostic COCOeval (``useCats = 0``)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools.coco import COCO

from maskkit.data.windows import WindowSampler, collate_windows
from maskkit.evaluation import evaluate_proposals, predictions_to_coco_results
from maskkit.models import zoo
from maskkit.structures import masks_to_rle


def _shapes(n: int, size: int = 128, seed: int = 0) -> list[tuple[torch.Tensor, dict]]:
    """``n`` images with 1-2 solid rectangles/ellipses (30-60 px) on a smooth random background."""
    g = np.random.default_rng(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    data = []
    for k in range(n):
        low = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed * 100 + k))
        image = F.interpolate(low, size=(size, size), mode="bilinear")[0] * 0.5 + 0.25
        boxes, masks = [], []
        for _ in range(1 + k % 2):
            for _try in range(50):
                w, h = g.uniform(30, 60), g.uniform(30, 60)
                x0, y0 = g.uniform(2, size - w - 2), g.uniform(2, size - h - 2)
                if all(x0 > b[2] + 4 or x0 + w < b[0] - 4 or y0 > b[3] + 4 or y0 + h < b[1] - 4 for b in boxes):
                    break
            if g.random() < 0.5:
                m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            else:
                m = ((xx + 0.5 - x0 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - y0 - h / 2) / (h / 2)) ** 2 <= 1
            image[:, m] = torch.tensor(g.uniform(0, 1, 3), dtype=torch.float32)[:, None]
            ys, xs = torch.nonzero(m, as_tuple=True)
            boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
            masks.append(m)
        data.append(
            (
                image,
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32),
                    "labels": torch.ones(len(boxes), dtype=torch.int64),
                    "masks": torch.stack(masks).to(torch.uint8),
                    "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
                    "image_id": k + 1,
                },
            )
        )
    return data


def _coco_gt(data) -> COCO:
    images, anns = [], []
    for image, t in data:
        images.append({"id": t["image_id"], "height": image.shape[1], "width": image.shape[2]})
        for rle, b, m in zip(masks_to_rle(t["masks"].bool()), t["boxes"].tolist(), t["masks"]):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": t["image_id"],
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "iscrowd": 0,
                }
            )
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _ar10(model, data, gt) -> float:
    model.eval()
    preds = model([image for image, _ in data])
    results = predictions_to_coco_results(preds, [t["image_id"] for _, t in data], {1: 1}, mask_threshold=0.5)
    return evaluate_proposals(gt, results, max_dets=(10, 100), iou_types=("segm",))["proposals/segm/AR@10"]


def _train(model, data, cfg, steps: int, seed: int) -> list[float]:
    """Minimal loop: Adam over ``model.trainable_parameters()`` on sampler batches."""
    sampler = WindowSampler(data, cfg.sampler, pixel_mean=cfg.pixel_mean, batch_size=16, length=16 * steps, seed=seed)
    loader = torch.utils.data.DataLoader(sampler, batch_size=16, shuffle=False, collate_fn=collate_windows)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=2e-3)
    model.train()
    mask_losses = []
    for crops, targets in loader:
        losses = model(crops, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if "loss_mask" in losses:
            mask_losses.append(loss.item())
    return mask_losses


@pytest.mark.slow  # ~40 s on a loaded 2-core CPU: 250 training steps, the only end-to-end training check
def test_two_stage_overfit_recovers_training_objects():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = _shapes(6)
    gt = _coco_gt(data)

    # stage 1: DeepMask (trunk + head C), mask and score batches
    cfg1 = zoo.get_config("deepmask_demo", overrides=["model.top_n=100"]).model
    deepmask = zoo.build_model(cfg1)
    untrained = _ar10(deepmask, data, gt)
    losses = _train(deepmask, data, cfg1, steps=150, seed=0)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:3])
    coarse = _ar10(deepmask, data, gt)
    assert untrained < 0.2
    assert coarse > max(0.4, untrained + 0.3), (untrained, coarse)

    # stage 2: the same weights in a SharpMask, DeepMask frozen, refinement trained
    cfg2 = zoo.get_config("sharpmask_demo", overrides=["model.top_n=100"]).model
    sharpmask = zoo.build_model(cfg2)
    missing, unexpected = sharpmask.load_state_dict(deepmask.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("refinement.") for k in missing)
    sharpmask.set_stage(2)
    frozen = {k: v.clone() for k, v in sharpmask.state_dict().items() if not k.startswith("refinement.")}
    _train(sharpmask, data, cfg2, steps=100, seed=1)
    assert all(torch.equal(v, sharpmask.state_dict()[k]) for k, v in frozen.items())  # DeepMask untouched
    refined = _ar10(sharpmask, data, gt)
    print(f"segm AR@10: untrained {untrained:.3f}, DeepMask {coarse:.3f}, SharpMask {refined:.3f}")
    sharpmask.cfg.use_refinement_output = False
    assert _ar10(sharpmask, data, gt) == pytest.approx(coarse)  # the same network still gives the coarse masks
    assert refined > coarse - 0.05 and refined > untrained + 0.3, (untrained, coarse, refined)

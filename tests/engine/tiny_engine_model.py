"""A tiny model and dataset that follow maskkit's train/eval contract, for engine tests.

Not a test module (no ``test_`` prefix): imported by the engine tests and by the 2-process
DDP worker script. No BatchNorm, and every loss is a per-image mean, so the gradient of a
global batch is the same whether it is computed in one process or averaged over several.
"""

from __future__ import annotations

import torch
from torch import nn

from maskkit.config import Config, validate_config
from maskkit.models.centermask.config import CenterMaskConfig
from maskkit.structures import empty_prediction

NUM_CLASSES = 2


def tiny_config(max_iter: int = 6, **train) -> Config:
    """A real Config (so model files carry valid metadata) describing a 2-class run."""
    cfg = Config(model=CenterMaskConfig(num_classes=NUM_CLASSES), name="tiny_engine_model")
    cfg.train.max_iter = max_iter
    cfg.train.batch_size = 4
    cfg.train.lr = 0.05
    cfg.train.warmup_iters = 2
    cfg.train.steps = (4,)
    cfg.train.log_period = 1
    cfg.train.eval_period = 0
    cfg.train.checkpoint_period = 1000
    cfg.data.num_workers = 0
    for k, v in train.items():
        setattr(cfg.train, k, v)
    validate_config(cfg)  # as every config is checked when it is built (choices, ranges)
    return cfg


class TinyModel(nn.Module):
    """conv -> global pool -> linear: predicts per-class object counts.

    train: ``model(images, targets) -> {"count": mse, "noise": ...}``; ``noise`` draws from
    torch's RNG when ``noisy`` so resume tests notice an RNG state that was not restored.
    eval: ``model(images) -> [prediction]`` (one full-image box per class with count > 0.5).
    """

    def __init__(self, noisy: bool = False, poison_at: int = -1):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, NUM_CLASSES)
        self.noisy, self.poison_at, self.calls = noisy, poison_at, 0

    def features(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack([torch.relu(self.conv(im[None])).mean((2, 3))[0] for im in images])  # [B, 8]
        return self.fc(x)  # [B, K]

    def forward(self, images, targets=None):
        out = self.features(images)
        if self.training:
            counts = torch.stack([torch.bincount(t["labels"] - 1, minlength=NUM_CLASSES).float() for t in targets])
            losses = {"count": ((out - counts) ** 2).mean()}
            if self.noisy:
                losses["noise"] = (out * torch.randn_like(out) * 1e-2).mean()
            self.calls += 1
            if self.calls == self.poison_at:
                losses["count"] = losses["count"] * float("nan")
            return losses
        preds = []
        for im, row in zip(images, out):
            h, w = im.shape[-2:]
            keep = (row > 0.5).nonzero().flatten()
            p = empty_prediction(h, w)
            n = len(keep)
            p["boxes"] = torch.tensor([[0.0, 0.0, w, h]]).repeat(n, 1)
            p["labels"] = keep + 1
            p["scores"] = torch.sigmoid(row[keep])
            p["masks"] = torch.ones(n, 1, h, w)
            p["mask_scores"] = p["scores"].clone()
            preds.append(p)
        return preds


class TinyDataset(torch.utils.data.Dataset):
    """``n`` random 16x16 images with 0-3 objects; a random flip drawn from torch's RNG stands
    in for augmentation (so per-sample seeding is exercised)."""

    class_names = ["a", "b"]
    cat_ids = [1, 2]

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(123)
        self.images = torch.rand(n, 3, 16, 16, generator=g)
        self.labels = [
            torch.randint(1, NUM_CLASSES + 1, (int(torch.randint(0, 4, (1,), generator=g)),), generator=g)
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        im = self.images[i]
        if torch.rand(()) < 0.5:
            im = im.flip(-1)
        n = len(self.labels[i])
        target = {
            "boxes": torch.tensor([[1.0, 1.0, 8.0, 8.0]]).repeat(n, 1),
            "labels": self.labels[i],
            "masks": torch.zeros(n, 16, 16, dtype=torch.uint8),
            "image_id": i,
            "iscrowd": torch.zeros(n, dtype=torch.int64),
        }
        return im, target

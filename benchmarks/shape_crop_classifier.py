"""How many object views does a CNN need to tell the six synthetic silhouettes apart?

A model-independent measure of the synthetic dataset's difficulty (used to size the demo; see
``benchmarks/synthetic_protocol.md``). Every annotated instance of the train split becomes one
crop: a square window centred on its box, side ``max(S, 1.25 * longer box side)`` (objects at
their native scale unless larger than the window), resampled to S x S with
``torchvision.ops.roi_align``. A CNN trained from scratch classifies the crops (6-way cross
entropy, random horizontal flips, AdamW, linear warmup then constant lr); accuracy on a
held-out 10 % of the crops is printed at each ``--eval-at`` step.

    python benchmarks/shape_crop_classifier.py --data RUN/data --arch plain --eval-at 150 300 600

``--arch plain``: 5 conv3x3-BN-ReLU layers (32-64-128-256-256) with max-pooling;
``--arch demo``: the trunk of the ``centermask_lite_demo`` preset (VoVNetV2-19-slim-dw, BN).
Chance is 1/6 = 16.7 %.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from maskkit.data.coco import CocoDataset
from maskkit.models.centermask.config import CenterMaskConfig


def object_crops(root: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, 3, size, size]`` crops (0..1) and ``[N]`` labels 0..K-1 of every instance of ``split``."""
    ds = CocoDataset(root / "annotations" / f"instances_{split}.json", root / split)
    crops, labels = [], []
    for i in range(len(ds)):
        image, target = ds[i]
        boxes = torch.as_tensor(target["boxes"]).as_subclass(torch.Tensor).float().reshape(-1, 4)
        if boxes.shape[0] == 0:
            continue
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = ((boxes[:, 2:] - boxes[:, :2]).amax(1) * 1.25).clamp(min=size)[:, None]
        windows = torch.cat([torch.zeros(len(boxes), 1), centre - side / 2, centre + side / 2], 1)
        image = torch.as_tensor(image).as_subclass(torch.Tensor).float()[None]
        crops.append(roi_align(image, windows, size, spatial_scale=1.0, sampling_ratio=2, aligned=True))
        labels.append(torch.as_tensor(target["labels"]).as_subclass(torch.Tensor).long() - 1)
    return torch.cat(crops), torch.cat(labels)


def build_net(arch: str, num_classes: int) -> nn.Module:
    if arch == "plain":

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        return nn.Sequential(
            *block(3, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            nn.MaxPool2d(2),
            *block(128, 256),
            nn.MaxPool2d(2),
            *block(256, 256),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(256, num_classes),
        )
    from maskkit.models.backbones import build_backbone
    from maskkit.models.zoo import get_config

    trunk = build_backbone(get_config("centermask_lite_demo", None, []).model.backbone)

    class TrunkClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.fc = trunk, nn.Linear(trunk.out_channels[-1], num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.trunk(x)[-1].mean((2, 3)))

    return TrunkClassifier()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="synthetic dataset root (maskkit data synth --out)")
    ap.add_argument("--arch", choices=("plain", "demo"), default="plain")
    ap.add_argument("--size", type=int, default=64, help="crop side S (default 64)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-at", type=int, nargs="+", default=[150, 300, 600], help="steps at which to report")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    t0 = time.time()
    crops, labels = object_crops(args.data, "train", args.size)
    k = int(labels.max()) + 1
    perm = torch.randperm(len(crops))
    held, train = perm[: len(crops) // 10], perm[len(crops) // 10 :]
    print(
        f"{len(crops)} crops ({len(train)} train / {len(held)} held out), {k} classes, "
        f"built in {time.time() - t0:.1f} s; {torch.get_num_threads()} threads",
        flush=True,
    )
    mean = torch.tensor(CenterMaskConfig.pixel_mean).view(1, 3, 1, 1)  # the models' input normalisation
    std = torch.tensor(CenterMaskConfig.pixel_std).view(1, 3, 1, 1)
    net = build_net(args.arch, k)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    print("| step | crops seen | held-out accuracy | train loss (last 50) | seconds |")
    print("|---|---|---|---|---|")
    t0, recent = time.time(), []
    for step in range(1, max(args.eval_at) + 1):
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, step / 20)
        idx = train[torch.randint(len(train), (args.batch,), generator=g)]
        flip = torch.rand(args.batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], crops[idx].flip(-1), crops[idx])
        net.train()
        loss = F.cross_entropy(net((x - mean) / std), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent = (recent + [loss.item()])[-50:]
        if step in args.eval_at:
            net.eval()
            with torch.no_grad():
                pred = torch.cat(
                    [net((crops[held[i : i + 256]] - mean) / std).argmax(1) for i in range(0, len(held), 256)]
                )
            acc = (pred == labels[held]).float().mean().item()
            print(
                f"| {step} | {step * args.batch} | {100 * acc:.1f} % | {sum(recent) / len(recent):.3f} | "
                f"{time.time() - t0:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

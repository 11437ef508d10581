"""Pretrain the demos' trunks on a *different* synthetic task (issue #12, item 3).

Both papers start from an ImageNet-pretrained trunk; the demo cannot download one, so maskkit
pretrains its own small trunks here and ships them in the package: the CenterMask demo's
VoVNetV2-19-micro (``maskkit/models/weights/vovnet19_micro_shapes12.safetensors``) and the
SharpMask demo's ``resnet_tiny`` (``--trunk resnet_tiny``,
``maskkit/models/weights/resnet_tiny_shapes12.safetensors``). The task: classify one of 12
procedural shapes that are **not** the demo's six categories (no star, ring, cross, crescent,
gear or arrow, and none of the demo's images or renderer): triangle, square, pentagon,
hexagon, ellipse, semicircle, L, T, trapezoid, rhombus, hollow square, U. Each 96 px image holds
one shape (random size, aspect, rotation, colour, position) on a colour-gradient background
with noise and 0-2 random strokes; every image is rendered afresh from ``(seed, step)``, so
the script is reproducible and nothing is memorised.

The VoVNet is written in centermask2's key layout (``stem.stem_1/conv.weight`` ...), the
layout ``model.backbone.weights`` already reads, with its input convention: BGR 0-255 minus
detectron2's mean, std 1. The ``resnet_tiny`` trunk (built as the SharpMask demo presets build
it: width 16, BatchNorm, reflection padding) is written in torchvision's ResNet names, the
layout ``model.trunk_weights`` reads, with torchvision's input convention: RGB 0-1 normalised
by the ImageNet mean/std.

    PYTHONPATH=. python benchmarks/pretrain_demo_trunk.py --steps 1500 \\
        --out maskkit/models/weights/vovnet19_micro_shapes12.safetensors
    PYTHONPATH=. python benchmarks/pretrain_demo_trunk.py --trunk resnet_tiny --steps 2000 --eval-every 250 \\
        --out maskkit/models/weights/resnet_tiny_shapes12.safetensors

Prints the held-out accuracy (2,000 images of another seed) every ``--eval-every`` steps.
The commands, budgets, machine and results of the shipped files are in
``benchmarks/synthetic_protocol.md`` (VoVNet: section "Issue #12: a cheaper model, the demo
scenes and a pretrained trunk"; resnet_tiny: section "SharpMask demo: a cheaper window crop, ...").
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from safetensors.torch import save_file
from torch import nn

from maskkit.models.backbones.vovnet import build_vovnet, official_names
from maskkit.models.sharpmask.config import SharpMaskConfig

SHAPES = [
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "ellipse",
    "semicircle",
    "l_shape",
    "t_shape",
    "trapezoid",
    "rhombus",
    "hollow_square",
    "u_shape",
]
SIZE = 96
MEAN_BGR = (103.53, 116.28, 123.675)  # detectron2's default (the centermask2 layout's convention)
# resnet_tiny: what the SharpMask model normalises with (torchvision's ImageNet convention)
IMAGENET_MEAN, IMAGENET_STD = SharpMaskConfig.pixel_mean, SharpMaskConfig.pixel_std


def _outline(kind: str, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """Unit-scale polygons (first = outer, others = holes) centred on 0."""
    if kind in ("triangle", "square", "pentagon", "hexagon"):
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[kind]
        return [[(math.cos(2 * math.pi * k / n), math.sin(2 * math.pi * k / n)) for k in range(n)]]
    if kind == "ellipse":
        return [[(math.cos(t), 0.6 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)]]
    if kind == "semicircle":
        return [[(math.cos(t), math.sin(t) - 0.4) for t in np.linspace(0, math.pi, 30)]]
    if kind == "l_shape":
        return [[(-1, -1), (-0.3, -1), (-0.3, 0.4), (1, 0.4), (1, 1), (-1, 1)]]
    if kind == "t_shape":
        return [[(-1, -1), (1, -1), (1, -0.4), (0.3, -0.4), (0.3, 1), (-0.3, 1), (-0.3, -0.4), (-1, -0.4)]]
    if kind == "trapezoid":
        return [[(-1, 0.7), (1, 0.7), (0.45, -0.7), (-0.45, -0.7)]]
    if kind == "rhombus":
        return [[(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]]
    if kind == "hollow_square":
        w = float(rng.uniform(0.35, 0.6))
        return [[(-1, -1), (1, -1), (1, 1), (-1, 1)], [(-w, -w), (w, -w), (w, w), (-w, w)]]
    if kind == "u_shape":
        return [[(-1, -1), (-0.4, -1), (-0.4, 0.4), (0.4, 0.4), (0.4, -1), (1, -1), (1, 1), (-1, 1)]]
    raise ValueError(kind)


def render(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One ``SIZE x SIZE`` RGB uint8 image and its class index."""
    label = int(rng.integers(len(SHAPES)))
    cells = rng.integers(0, 256, size=(3, 3, 3), dtype=np.uint8)
    bg = np.asarray(Image.fromarray(cells).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
    canvas = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 3))):  # distractor strokes
        pts = [tuple(rng.uniform(0, SIZE, 2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    scale = rng.uniform(0.18, 0.42) * SIZE
    aspect = rng.uniform(0.75, 1.33)
    angle = rng.uniform(0, 2 * math.pi)
    cx, cy = rng.uniform(0.3, 0.7, 2) * SIZE
    c, s = math.cos(angle), math.sin(angle)
    mean = bg.reshape(-1, 3).mean(0)
    for _ in range(10):  # a colour that stands out from the background
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - mean).sum() > 120:
            break
    mask = Image.new("L", (SIZE, SIZE), 0)
    mdraw = ImageDraw.Draw(mask)
    for k, poly in enumerate(_outline(SHAPES[label], rng)):
        pts = [(cx + scale * (x * aspect * c - y * s), cy + scale * (x * aspect * s + y * c)) for x, y in poly]
        mdraw.polygon(pts, fill=0 if k else 255)
    canvas.paste(tuple(int(v) for v in colour), (0, 0), mask)
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.8))))
    img = np.asarray(canvas, dtype=np.float32) + rng.normal(0, rng.uniform(0, 8), (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8), label


def batch(seed: int, step: int, n: int, rgb: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of ``(seed, step)`` as the trunk's input and labels: BGR 0-255 minus
    detectron2's mean (VoVNet) or, with ``rgb``, RGB 0-1 normalised by ImageNet's (resnet_tiny)."""
    rng = np.random.default_rng([seed, step])
    imgs, labels = zip(*(render(rng) for _ in range(n)))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    if rgb:
        x = (x / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    else:
        x = x.flip(1) - torch.tensor(MEAN_BGR).view(1, 3, 1, 1)  # RGB -> BGR
    return x, torch.tensor(labels)


def build_trunk(name: str) -> tuple[nn.Module, int]:
    """(trunk returning a list of feature maps, channels of the last): a VoVNet variant, or
    ``resnet_tiny`` exactly as the SharpMask demo presets configure it."""
    if name == "resnet_tiny":
        from maskkit.models.sharpmask.deepmask import build_trunk as build_sharpmask_trunk
        from maskkit.models.sharpmask.presets import deepmask_demo

        cfg = deepmask_demo().model
        return build_sharpmask_trunk(cfg), cfg.trunk_width * 4
    trunk = build_vovnet(name, norm="BN")
    return trunk, trunk.out_channels[-1]


class Classifier(nn.Module):
    """The trunk + global average pool of C5 + a linear layer (the linear layer is not shipped)."""

    def __init__(self, trunk: str) -> None:
        super().__init__()
        self.trunk, channels = build_trunk(trunk)
        self.fc = nn.Linear(channels, len(SHAPES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x)[-1].mean((2, 3)))


def accuracy(model: nn.Module, val: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in val)
    model.train()
    return right / sum(len(y) for _, y in val)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="V-19-micro", help="the VoVNet variant (without --trunk)")
    p.add_argument("--trunk", choices=["vovnet", "resnet_tiny"], default="vovnet")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default="maskkit/models/weights/vovnet19_micro_shapes12.safetensors")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rgb = args.trunk == "resnet_tiny"
    model = Classifier("resnet_tiny" if rgb else args.variant)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=max(0.05, 3 / args.steps)
    )
    val = [batch(args.seed + 1000, k, 100, rgb) for k in range(20)]  # 2,000 held-out images, another seed
    t0, times = time.time(), []
    for step in range(1, args.steps + 1):
        x, y = batch(args.seed, step, args.batch, rgb)
        ts = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        times.append(time.perf_counter() - ts)
        if step % args.eval_every == 0 or step == args.steps:
            print(
                f"step {step:5d}  loss {loss.item():.3f}  held-out accuracy {accuracy(model, val):.3f}  "
                f"{time.time() - t0:6.0f} s  ({statistics.median(times[-50:]) * 1000:.0f} ms/step)",
                flush=True,
            )
    acc = accuracy(model, val)
    # resnet_tiny keeps torchvision's names already; the VoVNet goes to centermask2's
    names = {k: k for k in model.trunk.state_dict()} if rgb else official_names(model.trunk)
    state = {names[k]: v.detach().clone().contiguous() for k, v in model.trunk.state_dict().items() if k in names}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "task": "12 procedural shapes (not the demo's categories), benchmarks/pretrain_demo_trunk.py",
        "variant": "resnet_tiny (SharpMask demo)" if rgb else args.variant,
        "steps": str(args.steps),
        "batch": str(args.batch),
        "seed": str(args.seed),
        "held_out_accuracy": f"{acc:.4f}",
        "input": "RGB 0-1, ImageNet mean/std" if rgb else "BGR 0-255 minus detectron2 mean, std 1",
    }
    save_file(state, str(out), metadata=meta)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(state)} tensors), held-out accuracy {acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

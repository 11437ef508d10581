"""Window sampler speed (issue #12, the SharpMask demo's step): one crop by torchvision's
``roi_align`` against maskkit's separable ``crop_window`` (the same numbers), and the whole
sampler per window on the demo's data with its image cache warm.

    maskkit data synth --out /tmp/sd --scenes demo --train 2000 --val 100 --seed 0
    PYTHONPATH=. python benchmarks/window_crop_speed.py --data /tmp/sd

One thread, interleaved, median of ``--rounds``; results in benchmarks/synthetic_protocol.md
("A cheaper window crop").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.ops import roi_align

from maskkit.data.coco import CocoDataset
from maskkit.data.windows import WindowSampler, crop_window
from maskkit.models.sharpmask.presets import deepmask_demo


def roi_align_crop(image, centre, scale, size, fill):
    """The sampler's previous crop: one roi_align (aligned, adaptive sampling) with the fill shift."""
    fill = fill.reshape(-1, 1, 1)
    half = size / (2.0 * scale)
    cx, cy = centre
    box = torch.tensor([[0.0, cx - half, cy - half, cx + half, cy + half]])
    return roi_align((image - fill)[None], box, (size, size), 1.0, 0, True)[0] + fill


def per_call_ms(fn, args_list) -> float:
    t = time.perf_counter()
    for a in args_list:
        fn(*a)
    return (time.perf_counter() - t) / len(args_list) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="the demo's data (maskkit data synth --scenes demo)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = deepmask_demo().model
    ds = CocoDataset(f"{args.data}/annotations/instances_train.json", f"{args.data}/train")
    g = torch.Generator().manual_seed(0)
    images = [ds[i][0] for i in range(20)]
    calls = []
    for k in range(200):  # the demo's geometry: 112 px crops, objects zoomed 2^-1.5 .. 2^1
        img = images[k % len(images)]
        h, w = img.shape[-2:]
        centre = (float(torch.rand(1, generator=g)) * w, float(torch.rand(1, generator=g)) * h)
        scale = 2 ** float(torch.empty(1).uniform_(-1.5, 1.0, generator=g))
        calls.append((img, centre, scale, 112, torch.tensor(cfg.pixel_mean)))
    for a in calls[:5]:
        torch.testing.assert_close(crop_window(*a), roi_align_crop(*a), rtol=0, atol=1e-4)
    sampler = WindowSampler(ds, cfg.sampler, pixel_mean=cfg.pixel_mean, batch_size=32, length=32 * 2000, seed=0)
    for i in range(32 * 150):  # warm the image cache (the demo's 2,000 images stay decoded)
        sampler[i]
    old, new, win = [], [], []
    for r in range(args.rounds):
        old.append(per_call_ms(roi_align_crop, calls))
        new.append(per_call_ms(crop_window, calls))
        start = 32 * (150 + 20 * r)
        t = time.perf_counter()
        for i in range(start, start + 32 * 20):
            sampler[i]
        win.append((time.perf_counter() - t) / (32 * 20) * 1e3)
    o, n = statistics.median(old), statistics.median(new)
    print(f"crop 112 px, {len(calls)} calls x {args.rounds} rounds, 1 thread (median):")
    print(f"  roi_align   {o:.3f} ms")
    print(f"  crop_window {n:.3f} ms  ({o / n:.1f}x faster)")
    w = statistics.median(win)
    print(f"sampler, cache warm: {w:.2f} ms per window ({32 * w:.0f} ms a batch of 32)")


if __name__ == "__main__":
    main()

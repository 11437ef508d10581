"""Issue #14 item 1 (part): pasting masks samples each one over its box only, so pasting 10
masks into a 12 MP photo costs about the output (4 bytes x masks x pixels), not ~20 bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maskkit.structures import paste_masks_in_image

ROOT = Path(__file__).resolve().parents[1]


def _full_grid_paste(masks, boxes, h, w, zero_outside):
    """The previous implementation: one full-image sampling grid per mask (the reference)."""
    n = masks.shape[0]
    x0, y0, x1, y1 = boxes.unbind(1)
    xs, ys = torch.arange(w) + 0.5, torch.arange(h) + 0.5
    gx = (xs[None] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1
    gy = (ys[None] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)
    out = F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if zero_outside:
        out = out * ((gy.abs() <= 1)[:, :, None] & (gx.abs() <= 1)[:, None, :])[:, None]
    return out


@pytest.mark.parametrize("zero_outside", [True, False])
def test_box_local_paste_equals_the_full_image_paste(zero_outside):
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        n, m = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 29, (1,), generator=g))
        h, w = (int(v) for v in torch.randint(1, 70, (2,), generator=g))
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 5  # some boxes leave the image
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * torch.tensor([w, h]) + 0.2], 1)
        masks = torch.rand(n, m, m, generator=g)
        assert torch.equal(
            paste_masks_in_image(masks, boxes, (h, w), zero_outside), _full_grid_paste(masks, boxes, h, w, zero_outside)
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pasting_into_a_12_mp_photo_costs_about_the_output():
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paste_memory.py"), "worktree", "10"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    fields = dict(kv.split("=") for kv in p.stdout.split() if "=" in kv)
    output = float(fields["output"])  # MiB
    extra = float(fields["peak_rss"]) - float(p.stdout.split("before paste ")[1].split()[0])
    assert extra < 1.5 * output, p.stdout  # the full-grid paste took ~5x the output (benchmarks/paste_memory.md)

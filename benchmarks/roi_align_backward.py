"""RoIAlign forward + backward on the CPU, one thread, CPU time (median of 7): torchvision's kernel
vs maskkit.models.roi_align (torchvision's forward, separable backward). Cases: the demo's P2
(batch 8, 48 ch, 32x32, 50 RoIs), a Lite model's P3 at 600 px (128 ch), a full model's P3 at 800 px.

    PYTHONPATH=. python benchmarks/roi_align_backward.py
"""

import statistics
import time

import torch
from torchvision.ops import roi_align

from maskkit.models.roi_align import roi_align_adaptive

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
for b, c, h, w, s, n, sz in [
    (8, 48, 32, 32, 0.25, 50, 60),
    (2, 128, 75, 100, 0.125, 200, 150),
    (2, 256, 100, 136, 0.125, 256, 200),
]:
    feat = torch.randn(b, c, h, w, requires_grad=True)
    xy = torch.rand(n, 2, generator=g) * (w / s - sz)
    wh = torch.rand(n, 2, generator=g) * sz + 10
    rois = torch.cat([torch.randint(0, b, (n, 1)).float(), xy, xy + wh], 1)
    go = torch.randn(n, c, 14, 14)
    t = {"torchvision": [], "separable": []}
    for _ in range(7):
        for k, fn in (
            ("torchvision", lambda: roi_align(feat, rois, 14, s, 0, True)),
            ("separable", lambda: roi_align_adaptive(feat, rois, 14, s)),
        ):
            c0 = time.process_time()
            torch.autograd.grad(fn(), feat, go)
            t[k].append(time.process_time() - c0)
    print((b, c, h, w, n), {k: f"{statistics.median(v) * 1000:.1f} ms" for k, v in t.items()})

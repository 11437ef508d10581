"""torch.compile (inductor, CPU) on the fused + channels_last CenterMask-Lite V-19 (issue #11).

The dense part (backbone, FPN, FCOS head) is compiled (``dynamic=False``; inductor
``freezing`` on: weights constant-folded and prepacked for oneDNN); decoding, NMS and the mask
branch stay eager (data-dependent shapes). Prints the compile time (first call), the steady-state
latency against the same fused eager model (interleaved, same process), the largest output
differences, and the same at a second input size (600x900: a recompile).

    PYTHONPATH=. python benchmarks/torch_compile_trial.py [--iters 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch._inductor.config as inductor_config

from maskkit.export.fuse import fuse_model
from maskkit.models.zoo import build, get_config


def compare(fused, compiled, image: torch.Tensor, iters: int, label: str) -> None:
    t0 = time.perf_counter()
    got = compiled([image])[0]
    print(f"{label}: first call (compiles) {time.perf_counter() - t0:.1f} s", flush=True)
    want = fused([image])[0]
    diffs = {k: f"{(want[k].float() - got[k].float()).abs().max().item():.1e}" for k in want}
    print(f"{label}: max |compiled - fused eager| {diffs}")
    ta, tb = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        fused([image])
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compiled([image])
        tb.append(time.perf_counter() - t0)
    a, b = statistics.median(ta) * 1000, statistics.median(tb) * 1000
    print(f"{label}: fused_cl {a:.0f} ms, compiled {b:.0f} ms (median of {iters}): {a / b:.2f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(2)
    inductor_config.freezing = True
    print(f"torch {torch.__version__}, load average {os.getloadavg()}")
    overrides = ["model.fcos.score_thresh=0.0", "model.fcos.detections_per_image=50", "model.min_size_test=600"]
    model = build(get_config("centermask_lite_v19", 80, overrides), backbone_weights=False).eval()
    fused = fuse_model(model, channels_last=True)
    compiled = fuse_model(model, channels_last=True)
    for part in ("backbone", "fpn", "fcos"):
        setattr(compiled, part, torch.compile(getattr(compiled, part), dynamic=False))
    with torch.inference_mode():
        compare(
            fused, compiled, torch.rand(3, 600, 800, generator=torch.Generator().manual_seed(0)), args.iters, "600x800"
        )
        compare(fused, compiled, torch.rand(3, 600, 900, generator=torch.Generator().manual_seed(1)), 3, "600x900")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Which convolutions of CenterMask-Lite V-19 take ATen's native ``_slow_conv2d_forward`` kernel
instead of oneDNN, and what that costs (issue #11, benchmarks/export_runtimes.md).

Part 1 runs the model once at 600x800 (eval, 2 threads) with a forward pre-hook on every
convolution recording each call's input, then re-runs every call alone under the profiler
and lists the ones whose kernel is not ``mkldnn_convolution``, for eager, fused and
fused + channels_last. Part 2 times those shapes on both kernels (min of 200 calls).

    PYTHONPATH=. python benchmarks/slow_conv_paths.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from maskkit.export.fuse import fuse_model
from maskkit.models.zoo import build, get_config

KERNELS = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")


def kernel_of(mod: nn.Module, x: torch.Tensor) -> str:
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as p:
        mod(x)
    names = {e.name for e in p.events()}
    return next((k for k in KERNELS if k in names), "other (" + type(mod).__name__ + ")")


def native_calls(model: nn.Module, image: torch.Tensor) -> list[str]:
    calls = []
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):

            def pre(mod, args, name=name):
                calls.append((name, mod, args[0].detach().clone(memory_format=torch.preserve_format)))

            hooks.append(mod.register_forward_pre_hook(pre))
    with torch.inference_mode():
        model([image])
    for h in hooks:
        h.remove()
    out = []
    for name, mod, x in calls:
        k = kernel_of(mod, x)
        if k != KERNELS[0]:
            cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            out.append(f"  {name:42s} x{list(x.shape)} {'CL' if cl else 'NCHW'} w{list(mod.weight.shape)} -> {k}")
    return out


def tmin(fn, n: int = 200) -> float:
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, load average {os.getloadavg()}")
    cfg = get_config("centermask_lite_v19", 80, ["model.fcos.score_thresh=0.0", "model.min_size_test=600"])
    model = build(cfg, backbone_weights=False).eval()
    image = torch.rand(3, 600, 800, generator=torch.Generator().manual_seed(0))
    for label, m in (("eager", model), ("fused", fuse_model(model)), ("fused_cl", fuse_model(model, True))):
        rows = native_calls(m, image)
        print(f"{label}: {len(rows)} convolution calls not on oneDNN")
        print("\n".join(rows))
    cases = [((1, 256, 1, 1), (256, 256, 1, 1), 1, 0), ((1, 1024, 1, 1), (1024, 1024, 1, 1), 1, 0)]
    cases += [((1, 128, 10, 13), (128, 128, 3, 3), 2, 1), ((1, 128, 10, 13), (128, 128, 3, 3), 1, 1)]
    cases += [((1, 128, 5, 7), (128, 128, 3, 3), 1, 1), ((1, 128, 10, 13), (80, 128, 3, 3), 1, 1)]
    print("min ms of 200 calls: ATen's choice (native) vs oneDNN forced, NCHW and channels_last")
    with torch.inference_mode():
        for xs, ws, s, pad in cases:
            x, w, b = torch.randn(xs), torch.randn(ws), torch.randn(ws[0])
            xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
            r = [
                tmin(lambda: torch.nn.functional.conv2d(x, w, b, s, pad)),
                tmin(lambda: torch.mkldnn_convolution(x, w, b, [pad, pad], [s, s], [1, 1], 1)),
                tmin(lambda: torch.nn.functional.conv2d(xc, wc, b, s, pad)),
                tmin(lambda: torch.mkldnn_convolution(xc, wc, b, [pad, pad], [s, s], [1, 1], 1)),
            ]
            print(
                f"  x{list(xs)} w{list(ws)} s{s}: native {r[0]:.3f} oneDNN {r[1]:.3f} | "
                f"CL native {r[2]:.3f} oneDNN {r[3]:.3f}"
            )
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""CenterMask-Lite V-19 at 600x800, 50 detections, 2 threads: eager, fused + channels_last and
ONNX files (ONNX Runtime; the last one also on OpenVINO) timed in ONE process, interleaved (one
call of each per round), so load changes hit every row alike (issue #11). The model is built
with seed 0, as ``benchmarks/ort_profile.py`` exports it, so files exported by two trees (e.g.
main's and a branch's) hold the same weights and are compared here on equal terms.

    PYTHONPATH=. python benchmarks/runtimes_same_process.py main.onnx,branch.onnx [--iters 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from maskkit.export.fuse import fuse_model
from maskkit.export.onnx_model import OnnxModel
from maskkit.models.zoo import build, get_config


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files")
    p.add_argument("--iters", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    overrides = ["model.fcos.score_thresh=0.0", "model.fcos.detections_per_image=50", "model.min_size_test=600"]
    model = build(get_config("centermask_lite_v19", 80, overrides), backbone_weights=False).eval()
    image = torch.rand(3, 600, 800, generator=torch.Generator().manual_seed(0))
    files = args.files.split(",")
    runtimes = {"eager": model, "fused_cl": fuse_model(model, channels_last=True)}
    runtimes.update({f"onnxruntime {f}": OnnxModel(f, threads=2) for f in files})
    runtimes[f"openvino {files[-1]}"] = OnnxModel(files[-1], threads=2, backend="openvino")
    print(f"load average before {os.getloadavg()}", flush=True)
    times = {k: [] for k in runtimes}
    with torch.inference_mode():
        for m in runtimes.values():
            m([image])
        for _ in range(args.iters):
            for k, m in runtimes.items():
                t0 = time.perf_counter()
                m([image])
                times[k].append(time.perf_counter() - t0)
    print(f"load average after {os.getloadavg()}")
    base = statistics.median(times["eager"])
    for k, v in times.items():
        med = statistics.median(v)
        print(f"{k:40s} median {1e3 * med:7.0f} ms  min {1e3 * min(v):7.0f} ms  eager / this {base / med:.2f}x")


if __name__ == "__main__":
    main()

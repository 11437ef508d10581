"""CenterMask-Lite V-19 (eager, fused + channels_last, ONNX Runtime) against ultralytics'
``yolo11n-seg`` (built from its bundled yaml: random weights, nothing downloaded), same 600x800
image, 2 threads, same process, median of ``--iters`` after one warm-up (issue #11). Both send 50
detections through their mask branch (score thresholds 0, at most 50). Benchmarks only:
ultralytics is not a maskkit dependency.

    PYTHONPATH=. python benchmarks/yolo_seg_peer.py --iters 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from maskkit.engine.bench import build_runtime, time_model
from maskkit.models.zoo import build, get_config


def time_yolo(image: np.ndarray, iters: int, threads: int) -> tuple[float, int]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    torch.set_num_threads(threads)  # importing ultralytics changes torch's thread count
    model = YOLO("yolo11n-seg.yaml")
    times, n = [], 0
    for i in range(iters + 1):
        t0 = time.perf_counter()
        res = model.predict(image, imgsz=(608, 800), conf=1e-9, max_det=50, verbose=False, device="cpu")
        if i:
            times.append((time.perf_counter() - t0) * 1000)
        n = len(res[0].boxes)
    return statistics.median(times), n


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(3, 600, 800, generator=torch.Generator().manual_seed(0))
    cfg = get_config("centermask_lite_v19", 80, ["model.fcos.score_thresh=0.0", "model.fcos.detections_per_image=50"])
    model = build(cfg, backbone_weights=False).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for runtime in ("eager", "fused_cl", "onnxruntime"):
            median, _, out = time_model(build_runtime(model, runtime, tmp), image, args.iters, 1)
            rows.append((f"centermask_lite_v19 [{runtime}]", median, len(out["boxes"])))
    hwc = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., ::-1].copy()  # BGR, as ultralytics reads
    median, n = time_yolo(hwc, args.iters, args.threads)
    rows.append(("yolo11n-seg (ultralytics, eager)", median, n))
    print(
        f"{torch.get_num_threads()} threads, 600x800 (yolo letterboxed to 608x800, its stride 32), "
        f"median of {args.iters} after 1 warm-up; yolo conf 1e-9 (0.0 reads as unset), max_det 50"
    )
    for name, ms, dets in rows:
        print(f"{name:<36} {ms:8.0f} ms  detections {dets}")
    best = min(rows[:3], key=lambda r: r[1])
    print(f"best maskkit runtime {best[0]}: {best[1] / rows[-1][1]:.2f}x the latency of yolo11n-seg")
    return 0


if __name__ == "__main__":
    sys.exit(main())

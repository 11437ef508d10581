"""CenterMask-Lite V-19 at float32, bf16 and INT8 on every CPU runtime, end to end, beside
ultralytics' yolo11n-seg at float32 and at its own best CPU precision, all timed interleaved in one
process (issue #24). End to end = a decoded image in, masks pasted at the image's size out
(``maskkit.engine.bench.time_models``: the model call plus ``BoxMasks.to_dense``), 600x800, 50
detections through the mask branch (score threshold 0, at most 50).

    PYTHONPATH=. python benchmarks/cpu_precision.py --weights RUN/model_best.safetensors \\
        --calibration DATA/train --iters 10 [--yolo]

``--proposals``: DeepMask-ours and SharpMask R-50 instead (the presets' 7 scales, the top 1000
proposals with masks pasted, 480x640, random weights), at float32 and each lower precision.

``--weights``: a trained Lite V-19 model file (default: the preset with random weights, its box
regression biased as ``maskkit bench`` does); ``--calibration``: the images the INT8 export is
calibrated on. Also prints, for the fastest runtime, where its time goes (NumPy pre-processing,
the graph, post-processing + paste) and the CPU's features. Benchmarks only: ultralytics is not
a maskkit dependency (``pip install ultralytics``; its yaml builds random weights, nothing is
downloaded).
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

from maskkit.engine.bench import bench_model, build_runtime, time_models
from maskkit.export.precision import cpu_features

ROWS = [  # (runtime, precision)
    ("eager", "fp32"),
    ("fused_cl", "fp32"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("fused_cl", "bf16"),
    ("openvino", "bf16"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
]


class Yolo(torch.nn.Module):
    """ultralytics' yolo11n-seg behind ``model([image])``: 50 detections (conf ~0), masks at the
    image's resolution (``retina_masks``), as maskkit's pasted masks."""

    def __init__(self, model, label: str):
        super().__init__()
        self.model, self.label = model, label

    def forward(self, images):
        hwc = (images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)[..., ::-1].copy()  # BGR
        res = self.model.predict(
            hwc, imgsz=(608, 800), conf=1e-9, max_det=50, verbose=False, device="cpu", retina_masks=True
        )[0]
        return {"boxes": res.boxes.xyxy, "masks": None if res.masks is None else res.masks.data}


def yolo_models(tmp: str, threads: int) -> dict:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    torch.manual_seed(0)
    eager = YOLO("yolo11n-seg.yaml")
    torch.set_num_threads(threads)  # importing ultralytics changes torch's thread count
    out = {("yolo11n-seg", "eager-fp32"): Yolo(eager, "eager")}
    # its own best CPU precision: the OpenVINO export (whose CPU plugin runs bf16 by default where
    # the CPU has it natively, as here: ultralytics does not set a precision hint)
    path = eager.export(format="openvino", imgsz=(608, 800), dynamic=False, verbose=False, project=tmp)
    out[("yolo11n-seg", "openvino-default")] = Yolo(YOLO(path, task="segment"), "openvino")
    return out


def breakdown(model, image: torch.Tensor, iters: int) -> dict[str, float]:
    """Median ms of the runner's pre-processing, graph and post-processing + paste."""
    r = model.runner
    x = image.numpy()
    parts = {"pre": [], "graph": [], "post + paste": []}
    for _ in range(iters):
        t0 = time.perf_counter()
        batch, size = r.preprocess(x)
        t1 = time.perf_counter()
        outs = r.session.run(None, {"image": batch, "size": size})
        t2 = time.perf_counter()
        r.postprocess(*outs, tuple(size), x.shape[-2:], paste=True)
        t3 = time.perf_counter()
        parts["pre"].append(t1 - t0)
        parts["graph"].append(t2 - t1)
        parts["post + paste"].append(t3 - t2)
    return {k: 1000 * statistics.median(v) for k, v in parts.items()}


def proposals(args) -> int:
    """DeepMask / SharpMask R-50 full-image proposals at each precision (interleaved)."""
    from maskkit.models.zoo import build, get_config

    image = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    rows = [("eager", "fp32"), ("openvino", "fp32"), ("fused_cl", "bf16"), ("openvino", "bf16"), ("openvino", "int8")]
    timed = {}
    with tempfile.TemporaryDirectory(prefix="maskkit-precision-") as tmp:
        from maskkit.engine.bench import random_calibration_folder

        calib = args.calibration or random_calibration_folder(image, tmp, count=4)
        for name in ("deepmask_r50", "sharpmask_r50"):
            torch.manual_seed(0)
            model = build(get_config(name), backbone_weights=False).eval()
            for r, q in rows:
                timed[(name, f"{r}-{q}")] = build_runtime(model, r, tmp, q, calib)
        timings, _ = time_models(timed, image, args.iters, 1)
    print(f"{cpu_features().describe()}; torch {torch.__version__}, {args.threads} threads, 480x640, top 1000")
    for (name, rt), (median, times, out) in timings.items():
        base = timings[(name, "eager-fp32")][0]
        print(
            f"{name:<14} {rt:<16} {median:>9.0f} ms {min(times):>9.0f} ms  {len(out['boxes']):>5}  {base / median:.2f}x"
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--proposals", action="store_true")
    p.add_argument("--weights", default=None)
    p.add_argument("--calibration", default=None)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--yolo", action="store_true")
    p.add_argument("--rows", default=",".join(f"{r}-{q}" for r, q in ROWS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.proposals:
        return proposals(args)
    overrides = ["model.fcos.score_thresh=0.0", "model.fcos.detections_per_image=50", "model.min_size_test=600"]
    model, label = bench_model("centermask_lite_v19", args.weights, 80, overrides, "cpu")
    image = torch.rand(3, 600, 800, generator=torch.Generator().manual_seed(0))
    wanted = [tuple(x.rsplit("-", 1)) for x in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="maskkit-precision-") as tmp:
        calib = args.calibration
        if calib is None:
            from maskkit.engine.bench import random_calibration_folder

            calib = random_calibration_folder(image, tmp)
        timed = {(label, f"{r}-{q}"): build_runtime(model, r, tmp, q, calib) for r, q in wanted}
        if args.yolo:
            timed.update(yolo_models(tmp, args.threads))
        timings, _ = time_models(timed, image, args.iters, 2)
        onnx_rows = {k: m for k, m in timed.items() if hasattr(m, "runner")}
        best = min(onnx_rows, key=lambda k: timings[k][0]) if onnx_rows else None
        split = breakdown(onnx_rows[best], image, args.iters) if best else {}
    print(
        f"{cpu_features().describe()}; torch {torch.__version__}, {args.threads} threads, 600x800, {args.iters} rounds"
    )
    base = timings[(label, "eager-fp32")][0] if (label, "eager-fp32") in timings else None
    yolo = {k: v[0] for k, v in timings.items() if k[0] == "yolo11n-seg"}
    print(f"{'model':<22} {'runtime-precision':<20} {'median ms':>10} {'min ms':>8} {'dets':>5} {'vs eager fp32':>14}")
    for (name, rt), (median, times, out) in timings.items():
        ratio = f"{base / median:.2f}x" if base else "-"
        print(f"{name:<22} {rt:<20} {median:>10.1f} {min(times):>8.1f} {len(out['boxes']):>5} {ratio:>14}")
    for yk, ym in yolo.items():
        for k, v in timings.items():
            if k[0] != "yolo11n-seg":
                print(f"{k[1]} / yolo11n-seg [{yk[1]}]: {v[0] / ym:.2f}x its latency")
    if best:
        total = sum(split.values())
        print(f"{best[1]}: " + ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f} %)" for k, v in split.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

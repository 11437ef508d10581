"""Accuracy of a trained model at float32, bf16 and INT8 on held-out images (issue #24): COCO
segm / box AP and AP50 (proposal AR@10/100 for DeepMask/SharpMask), and how far each precision's
detections agree with float32's (:mod:`maskkit.evaluation.agreement`). INT8 files are calibrated
on the dataset's *train* images and evaluated on its *val* images, never the same ones.

    PYTHONPATH=. python benchmarks/precision_accuracy.py --weights RUN/model_best.safetensors \\
        --data DATA [--calibration-images 32] [--threads 2] [--max-images 0]

Prints one markdown row per variant; ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from maskkit.checkpoint import load_model
from maskkit.data.coco import open_split
from maskkit.engine.export import export_model
from maskkit.engine.inference.evaluate import evaluate_model
from maskkit.engine.inference.predictor import infer_batches
from maskkit.engine.quantize import quantize_model
from maskkit.evaluation.agreement import agreement
from maskkit.export.onnx_model import OnnxModel, with_precision
from maskkit.export.precision import cpu_features

KEYS = {
    "centermask": ("segm/AP", "segm/AP50", "bbox/AP", "bbox/AP50"),
    "sharpmask": ("proposals/segm/AR@10", "proposals/segm/AR@100", "proposals/bbox/AR@100"),
}


def variants(weights: Path, data: Path, tmp: str, count: int, threads: int) -> dict:
    """name -> a callable building the model of that variant (built lazily: each quantizes once)."""
    calibration = data  # a COCO root: its train split
    model = load_model(weights)
    onnx = export_model(model, Path(tmp) / "float.onnx")

    def int8(quantizer: str) -> Path:
        return quantize_model(
            load_model(weights),
            Path(tmp) / f"{quantizer}.int8.onnx",
            calibration,
            calibration_count=count,
            quantizer=quantizer,
        )

    def rest_bf16(path: Path) -> OnnxModel:
        """The INT8 file with OpenVINO's bf16 hint for what is not quantized (a candidate)."""
        from maskkit.export.runtime import _OpenVinoSession

        m = OnnxModel(path, threads=threads)
        m.runner.session = _OpenVinoSession(path, threads, "bf16")
        return m

    return {
        "fp32 eager": lambda: load_model(weights),
        "fp32 onnxruntime": lambda: OnnxModel(onnx, threads=threads),
        "bf16 eager (autocast, fused)": lambda: with_precision(load_model(weights), "bf16", "model"),
        "bf16 openvino": lambda: OnnxModel(onnx, threads=threads, precision="bf16"),
        "int8 nncf / openvino": lambda: OnnxModel(int8("nncf"), threads=threads),
        "int8 nncf / onnxruntime": lambda: OnnxModel(
            Path(tmp) / "nncf.int8.onnx", threads=threads, backend="onnxruntime"
        ),
        "int8 nncf / openvino, rest bf16": lambda: rest_bf16(Path(tmp) / "nncf.int8.onnx"),
        "int8 onnxruntime-quantizer / openvino": lambda: OnnxModel(int8("onnxruntime"), threads=threads),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--calibration-images", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--only", default=None, help="comma-separated variant names")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    val = open_split(args.data, "val")
    system = load_model(args.weights).info.config.model.system
    keys = KEYS[system]
    n = len(val) if args.max_images <= 0 else min(args.max_images, len(val))
    images = [val.load_image(i) for i in range(n)]
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="maskkit-precision-") as tmp:
        for name, make in variants(
            Path(args.weights), Path(args.data), tmp, args.calibration_images, args.threads
        ).items():
            if args.only and name not in args.only.split(","):
                continue
            t0 = time.time()
            model = make()
            metrics = evaluate_model(model, val, max_images=args.max_images, progress=False)
            preds = list(infer_batches(model, images))
            if reference is None:
                reference = preds
            agree = agreement(reference, preds)
            rows.append(
                {
                    "variant": name,
                    **{k: metrics.get(k) for k in keys},
                    "found": agree.found_fraction,
                    "mask_iou": agree.mean_mask_iou,
                    "seconds": round(time.time() - t0, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"{cpu_features().describe()}; torch {torch.__version__}; {args.weights} on {n} val images of {args.data}")
    print("| variant | " + " | ".join(keys) + " | vs fp32: found (IoU >= 0.9) | mask IoU |")
    print("|---" * (len(keys) + 3) + "|")
    base = rows[0]
    for r in rows:
        cells = [f"{100 * r[k]:.2f} ({100 * (r[k] - base[k]):+.2f})" for k in keys]
        print(f"| {r['variant']} | " + " | ".join(cells) + f" | {100 * r['found']:.1f} % | {r['mask_iou']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

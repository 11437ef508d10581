"""GPU speed at the papers' settings (issue #16): inference latency, precisions, torch.compile,
full-image proposals and training throughput, in one process per section.

    PYTHONPATH=. python benchmarks/gpu_speed.py --section latency --out gpu_latency.json
    PYTHONPATH=. python benchmarks/gpu_speed.py --section proposals --out gpu_proposals.json
    PYTHONPATH=. python benchmarks/gpu_speed.py --section train --out gpu_train.json
    PYTHONPATH=. python benchmarks/gpu_speed.py --section compile --out gpu_compile.json

Conventions (those of ``maskkit bench``, :mod:`maskkit.engine.bench`): batch 1, eval mode,
random weights (nothing downloaded), so both score thresholds are 0 and both detection caps 50
(the Lite presets' ``detections_per_image``; Mask R-CNN's ``box_detections_per_img``): every model
sends 50 boxes through its mask branch. One real COCO image (coco-tiny val, resized by each
model to the shorter side given). Latency = the whole ``model([image])`` call (resize, backbone,
heads, decoding) plus pasting the masks at image size, CUDA synchronised, median of ``--iters``
runs after ``--warmup``; rows of one size are timed interleaved (:func:`time_models`), so load
drift moves them alike. "fp32" is PyTorch's default (cuDNN may use TF32 for convolutions,
``torch.backends.cudnn.allow_tf32``, recorded in the output); "fp16" / "bf16" wrap the call in
``torch.autocast``.

The paper's figures: CenterMask-Lite V-19 / V-39 at 600 px 23 / 28 ms on a Titan Xp (CenterMask
paper, Table 6); DeepMask-ours 0.46 s and SharpMask 0.76 s per COCO image on a K40 (SharpMask
paper, Sec. 4, "full-image inference"). Results and the commands that ran them:
``benchmarks/gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import maskkit
from maskkit.data.loader import to_device
from maskkit.engine.bench import build_peer, time_models
from maskkit.models.zoo import build, get_config

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco-tiny"
DETECTIONS = 50


class Autocast(nn.Module):
    """``model`` called under ``torch.autocast(device, dtype)``."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, images):
        if self.dtype is None:
            return self.model(images)
        with torch.autocast(images[0].device.type, dtype=self.dtype):
            return self.model(images)


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def precisions(names: str, device: torch.device) -> dict[str, torch.dtype | None]:
    """``--precisions`` (comma-separated names of :data:`PRECISIONS`) on ``device``: fp16 is a CUDA
    mode, left out on the CPU (the smoke run)."""
    return {p: PRECISIONS[p] for p in names.split(",") if not (p == "fp16" and device.type == "cpu")}


def environment(device: torch.device) -> dict:
    env = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            env["driver"] = None
    return env


def coco_image(index: int = 0) -> torch.Tensor:
    files = sorted((COCO / "val2017").glob("*.jpg"))
    if not files:
        raise SystemExit(f"gpu_speed: no images under {COCO / 'val2017'} (../shared beside the checkout)")
    rgb = np.asarray(Image.open(files[index]).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def centermask(name: str, size: int, device: torch.device) -> nn.Module:
    overrides = [
        "model.fcos.score_thresh=0.0",
        f"model.fcos.detections_per_image={DETECTIONS}",
        f"model.min_size_test={size}",
    ]
    torch.manual_seed(0)
    return build(get_config(name, 80, overrides), backbone_weights=False).to(device).eval()


def _rows(timings: dict, extra: dict) -> list[dict]:
    rows = []
    for key, (median, times, out) in timings.items():
        model, size, precision = key
        rows.append(
            {
                "model": model,
                "size": size,
                "precision": precision,
                "median_ms": round(median, 3),
                "min_ms": round(min(times), 3),
                "runs": len(times),
                "detections": len(out["boxes"]),
                **extra,
            }
        )
    return rows


def latency(device: torch.device, iters: int, warmup: int, quick: bool, precs: dict) -> list[dict]:
    image = coco_image().to(device)
    plan = {600: ["centermask_lite_v19", "centermask_lite_v39"], 800: ["centermask_v39"]}
    if quick:
        plan = {600: ["centermask_lite_v19"]}
    rows = []
    for size, names in plan.items():
        models = {}
        for name in names:
            net = centermask(name, size, device)
            for p, dtype in precs.items():
                models[(name, size, p)] = Autocast(net, dtype)
        torch.manual_seed(0)
        peer = build_peer("maskrcnn_r50", size, 1333 if size == 800 else 1000, DETECTIONS).to(device)
        for p, dtype in precs.items():
            models[("maskrcnn_r50", size, p)] = Autocast(peer, dtype)
        with torch.inference_mode():
            timings, _ = time_models(models, image, iters, warmup)
        rows += _rows(timings, {"input_hw": list(image.shape[-2:])})
        for r in rows[-len(models) :]:
            ms, dets = r["median_ms"], r["detections"]
            print(f"{r['model']:<22} {r['size']:>4} {r['precision']:<5} {ms:8.2f} ms  dets {dets}")
    return rows


def compile_section(device: torch.device, iters: int, warmup: int, quick: bool, precs: dict) -> list[dict]:
    """torch.compile of the trunk + FPN + heads' convolutions (the data-dependent decode and NMS
    stay eager: dynamo breaks the graph there) against eager, Lite V-19 at 600 px."""
    image = coco_image().to(device)
    eager = centermask("centermask_lite_v19", 600, device)
    compiled = centermask("centermask_lite_v19", 600, device)
    t0 = time.perf_counter()
    compiled.backbone = torch.compile(compiled.backbone)
    compiled.fpn = torch.compile(compiled.fpn)
    with torch.inference_mode():
        compiled([image])
        if device.type == "cuda":
            torch.cuda.synchronize()
    first = time.perf_counter() - t0
    models = {
        ("centermask_lite_v19", 600, "fp32 eager"): eager,
        ("centermask_lite_v19", 600, "fp32 compiled"): compiled,
        ("centermask_lite_v19", 600, "fp16 eager"): Autocast(eager, torch.float16 if device.type == "cuda" else None),
        ("centermask_lite_v19", 600, "fp16 compiled"): Autocast(
            compiled, torch.float16 if device.type == "cuda" else None
        ),
    }
    with torch.inference_mode():
        timings, _ = time_models(models, image, iters, warmup)
    rows = _rows(timings, {"first_call_s": round(first, 1)})
    for r in rows:
        print(f"{r['precision']:<14} {r['median_ms']:8.2f} ms")
    return rows


def proposals(device: torch.device, iters: int, warmup: int, quick: bool, precs: dict) -> list[dict]:
    """DeepMask-ours vs SharpMask full-image proposals at the presets' (the paper's) scales on
    COCO images of their own size (the paper: 0.46 s / 0.76 s on a K40)."""
    image = coco_image().to(device)
    models = {}
    for name in ("deepmask_r50", "sharpmask_r50"):
        torch.manual_seed(0)
        over = ["model.scales=[-1.0,0.0]"] if quick else []
        net = maskkit.create_model(name, overrides=over).to(device).eval()
        for p, dtype in precs.items():
            models[(name, "native", p)] = Autocast(net, dtype)
    with torch.inference_mode():
        timings, _ = time_models(models, image, iters, warmup)
    rows = _rows(timings, {"input_hw": list(image.shape[-2:]), "scales": list(net.cfg.scales)})
    for r in rows:
        print(f"{r['model']:<14} {r['precision']:<5} {r['median_ms']:9.1f} ms  proposals {r['detections']}")
    return rows


def _train_batch(device: torch.device, batch: int, size: int) -> tuple[list, list]:
    """``batch`` coco-tiny train images with annotations, resized to the shorter side ``size``
    (boxes scaled, masks resized nearest), on ``device``."""
    from maskkit.data.coco import CocoDataset

    ds = CocoDataset(COCO / "annotations" / "instances_train2017.json", COCO / "train2017", dense_masks=True)
    images, targets = [], []
    for i in range(len(ds)):
        img, t = ds[i]
        if not len(t["labels"]):
            continue
        img = img.as_subclass(torch.Tensor)
        s = size / min(img.shape[-2:])
        hw = [round(img.shape[-2] * s), round(img.shape[-1] * s)]
        images.append(nn.functional.interpolate(img[None], size=hw, mode="bilinear", align_corners=False)[0])
        masks = t["masks"].as_subclass(torch.Tensor)
        masks = nn.functional.interpolate(masks[None].float(), size=hw, mode="nearest")[0].to(torch.uint8)
        targets.append(
            {
                "boxes": t["boxes"].as_subclass(torch.Tensor) * s,
                "labels": t["labels"],
                "iscrowd": t["iscrowd"],
                "masks": masks,
            }
        )
        if len(images) == batch:
            break
    return to_device(images, device), to_device(targets, device)


def train_section(device: torch.device, iters: int, warmup: int, quick: bool, precs: dict) -> list[dict]:
    """Training images/s of Lite V-19 at 600 px (batch 8; SGD as the preset), fp32 / bf16 / fp16
    with ``torch.amp.GradScaler`` (as ``train.amp``), median step time over ``iters`` steps."""
    batch = 2 if quick else 8
    images, targets = _train_batch(device, batch, 600)
    rows = []
    for p, dtype in precs.items():
        torch.manual_seed(0)
        model = maskkit.create_model("centermask_lite_v19", num_classes=80).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=p == "fp16")
        times, losses = [], []
        for step in range(warmup + iters):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = sum(model(images, targets).values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
            losses.append(loss.item())
        med = statistics.median(times)
        rows.append(
            {
                "model": "centermask_lite_v19",
                "size": 600,
                "precision": p,
                "batch": batch,
                "median_step_s": round(med, 4),
                "images_per_s": round(batch / med, 2),
                "first_loss": round(losses[0], 4),
                "last_loss": round(losses[-1], 4),
                "finite": all(np.isfinite(losses)),
                "peak_mem_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if device.type == "cuda"
                else None,
            }
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        r = rows[-1]
        print(f"train {p:<5} batch {batch}: {r['images_per_s']:7.2f} img/s  loss {r['first_loss']} -> {r['last_loss']}")
    return rows


SECTIONS = {"latency": latency, "compile": compile_section, "proposals": proposals, "train": train_section}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--section", choices=sorted(SECTIONS), required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precisions", default="fp32,fp16,bf16", help="the precisions timed (latency, proposals, train)")
    ap.add_argument("--quick", action="store_true", help="one small case per section (a smoke run on the CPU)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the rows and the environment")
    args = ap.parse_args()
    device = torch.device(args.device)
    t0 = time.perf_counter()
    rows = SECTIONS[args.section](device, args.iters, args.warmup, args.quick, precisions(args.precisions, device))
    record = {
        "section": args.section,
        "environment": environment(device),
        "iters": args.iters,
        "warmup": args.warmup,
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(f"{args.section}: {record['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()

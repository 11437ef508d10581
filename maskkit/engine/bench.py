"""Measure inference latency (and FLOPs) of a model preset, side by side with a peer.

``maskkit bench --model centermask_lite_v19 --size 600 --vs maskrcnn_r50`` times both models
in this process on the same random image (shorter side ``--size``, 4:3), in eval mode, with
the same number of detections sent through each mask branch: random weights give few
confident boxes, so both score thresholds are set to 0 and both detection caps to
``--detections`` (CenterMask: ``fcos.score_thresh=0`` -> every location is a candidate, the
top ``detections_per_image`` after NMS are kept; Mask R-CNN: ``box_score_thresh=0``,
``box_detections_per_img``). The reported latency is the median over ``--iters`` timed
runs after ``--warmup`` untimed ones, of the whole ``model([image])`` call (resize,
backbone, heads, decoding, masks pasted at image size).

FLOPs come from :mod:`maskkit.models.flops`; this module only times.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor, nn

from maskkit.errors import MaskkitError
from maskkit.models.centermask.config import CenterMaskConfig
from maskkit.models.flops import bench_image_size, centermask_gflops, count_gflops
from maskkit.models.zoo import build_model, get_config

__all__ = ["PEERS", "time_model", "build_peer", "run_bench", "format_rows"]

PEERS = ("maskrcnn_r50",)


def time_model(model: nn.Module, image: Tensor, iters: int = 10, warmup: int = 2) -> tuple[float, list[float], dict]:
    """Median latency in ms of ``model([image])`` over ``iters`` runs (after ``warmup``), all
    timings, and the last prediction."""
    sync = torch.cuda.synchronize if image.is_cuda else (lambda: None)
    times, out = [], None
    with torch.inference_mode():
        for i in range(warmup + iters):
            sync()
            t0 = time.perf_counter()
            out = model([image])[0]
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), times, out


def build_peer(name: str, min_size: int, max_size: int, detections: int) -> nn.Module:
    """torchvision's Mask R-CNN R50-FPN, randomly initialised (nothing downloaded), resizing to
    the same input size and forced to send ``detections`` boxes through its mask branch."""
    if name != "maskrcnn_r50":
        raise MaskkitError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=min_size, max_size=max_size,
                                 box_score_thresh=0.0, box_detections_per_img=detections).eval()


def run_bench(model_name: str, size: int | None = None, vs: str | None = None, iters: int = 10, warmup: int = 2,
              device: str = "cpu", detections: int = 50, num_classes: int = 80, flops: bool = True) -> list[dict]:
    """Time preset ``model_name`` (and the peer ``vs``) on the same image -> one row per model:
    ``dict(model, input, detections, median_ms, gflops, ...)``."""
    cfg = get_config(model_name, num_classes)
    if not isinstance(cfg.model, CenterMaskConfig):
        raise MaskkitError(f"bench measures CenterMask presets; {model_name!r} is a {cfg.model.system} model")
    overrides = ["model.fcos.score_thresh=0.0", f"model.fcos.detections_per_image={detections}"]
    if size:
        overrides.append(f"model.min_size_test={size}")
    cfg = get_config(model_name, num_classes, overrides)
    model = build_model(cfg.model).to(device).eval()
    h, w = bench_image_size(model.cfg.min_size_test, model.cfg.max_size_test)
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    median, times, out = time_model(model, image, iters, warmup)
    rows.append({"model": model_name, "input": f"{h}x{w}", "detections": len(out["boxes"]), "median_ms": median,
                 "min_ms": min(times), "gflops": centermask_gflops(model, h, w) if flops else None})
    if vs:
        peer = build_peer(vs, h, max(h, w), detections).to(device)
        median, times, out = time_model(peer, image, iters, warmup)
        g = count_gflops(lambda: peer([image])) if flops else None
        rows.append({"model": vs, "input": f"{h}x{w}", "detections": len(out["boxes"]), "median_ms": median,
                     "min_ms": min(times), "gflops": g})
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'model':<30} {'input':>10} {'dets':>5} {'median ms':>10} {'min ms':>8} {'GFLOPs':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        lines.append(f"{r['model']:<30} {r['input']:>10} {r['detections']:>5} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {g:>8}")
    if len(rows) == 2:
        lines.append(f"{rows[1]['model']} / {rows[0]['model']} latency ratio: {rows[1]['median_ms'] / rows[0]['median_ms']:.2f}x")
    return "\n".join(lines)

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

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` and reported as
GFLOPs with **one multiply-add = 1 FLOP** (the convention of the paper's and detectron2's
tables; FlopCounterMode itself counts 2 per multiply-add). Only convolutions and matrix
products are counted (as detectron2/fvcore do); NMS, RoIAlign and mask pasting are not.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from maskkit.errors import MaskkitError

__all__ = ["bench_image_size", "count_gflops", "centermask_gflops", "time_model", "build_peer", "run_bench",
           "configure_parser", "run_cli"]

PEERS = ("maskrcnn_r50",)


def bench_image_size(min_size: int, max_size: int = 0) -> tuple[int, int]:
    """``(h, w)`` of a 4:3 landscape image with shorter side ``min_size`` (longer side capped at ``max_size``)."""
    h, w = min_size, round(min_size * 4 / 3)
    if max_size and w > max_size:
        h, w = round(h * max_size / w), max_size
    return int(h), int(w)


def count_gflops(fn: Callable[[], object]) -> float:
    """GFLOPs (multiply-add = 1) of everything ``fn()`` runs."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2 / 1e9


def centermask_gflops(model: nn.Module, height: int, width: int, detections: int | None = None) -> float:
    """GFLOPs of a CenterMask forward on one ``height x width`` image with ``detections``
    RoIs (default: the config's ``detections_per_image``, 50) through the mask branch.

    The dense part (backbone, FPN, FCOS head) runs on the padded input; the mask branch
    (SAG-Mask + MaskIoU) on ``detections`` RoI feature maps. Works on a model built on the
    ``meta`` device (shapes only: instant, no memory), which ``maskkit models`` uses.
    """
    cfg = model.cfg
    n = cfg.fcos.detections_per_image if detections is None else detections
    d = max(cfg.size_divisibility, 1)
    hp, wp = -(-height // d) * d, -(-width // d) * d
    p = next(model.parameters())
    image = torch.zeros(1, 3, hp, wp, device=p.device, dtype=p.dtype)
    res = cfg.mask.pooler_resolution
    rois = torch.zeros(n, cfg.fpn_channels, res, res, device=p.device, dtype=p.dtype)
    probs = torch.zeros(n, 1, 2 * res, 2 * res, device=p.device, dtype=p.dtype)

    def forward():
        model.fcos(model.fpn(model.backbone(image)))
        model.mask_head(rois)
        if model.maskiou is not None:
            model.maskiou(rois, probs)

    was_training = model.training
    model.eval()
    try:
        return count_gflops(forward)
    finally:
        model.train(was_training)


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
    from maskkit.models.zoo import build_model, get_config

    cfg = get_config(model_name, num_classes)
    if cfg.model.system != "centermask":
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


def _format(rows: list[dict]) -> str:
    head = f"{'model':<30} {'input':>10} {'dets':>5} {'median ms':>10} {'min ms':>8} {'GFLOPs':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        lines.append(f"{r['model']:<30} {r['input']:>10} {r['detections']:>5} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {g:>8}")
    if len(rows) == 2:
        lines.append(f"{rows[1]['model']} / {rows[0]['model']} latency ratio: {rows[1]['median_ms'] / rows[0]['median_ms']:.2f}x")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="CenterMask preset to time (see `maskkit models`)")
    parser.add_argument("--size", type=int, default=None,
                        help="shorter side of the 4:3 test image in px (default: the preset's test size)")
    parser.add_argument("--vs", choices=PEERS, default=None,
                        help="also time this peer (torchvision Mask R-CNN R50-FPN, random weights) on the same image")
    parser.add_argument("--iters", type=int, default=10, help="timed runs; the median is reported (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--detections", type=int, default=50,
                        help="detections forced through each model's mask branch (default 50)")
    parser.add_argument("--num-classes", type=int, default=80, help="number of classes of the preset (default 80)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting GFLOPs")


def run_cli(args: argparse.Namespace) -> int:
    if args.iters < 1 or args.warmup < 0:
        raise MaskkitError("--iters must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise MaskkitError(f"--device {args.device}: CUDA is not available on this machine")
    rows = run_bench(args.model, args.size, args.vs, args.iters, args.warmup, args.device, args.detections,
                     args.num_classes, flops=not args.no_flops)
    print(f"device {args.device}, {torch.get_num_threads()} threads, {args.iters} timed runs after {args.warmup} warm-up")
    print(_format(rows))
    return 0

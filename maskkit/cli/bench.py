"""Measure inference latency (and FLOPs) of a model preset, side by side with a peer.

maskkit bench --model centermask_lite_v19 --size 600 --vs maskrcnn_r50
maskkit bench --model centermask_lite_v19 --runtime eager,fused,onnxruntime --threads 2
maskkit bench --weights run/model_best.safetensors --runtime fused_cl,openvino --precision fp32,bf16,int8
"""

from __future__ import annotations

import argparse

import torch

from maskkit.engine.bench import PEERS, RUNTIMES, format_rows, run_bench
from maskkit.errors import MaskkitError
from maskkit.export.precision import cpu_features


def configure_parser(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="CenterMask preset to time, random weights (see `maskkit models`)")
    src.add_argument("--weights", metavar="FILE", help="a trained CenterMask model file to time instead of a preset")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="shorter side of the 4:3 test image in px (default: the preset's test size)",
    )
    parser.add_argument(
        "--vs",
        choices=PEERS,
        default=None,
        help="also time this peer (torchvision Mask R-CNN R50-FPN, random weights) on the same image",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=10,
        help="timed rounds; each round calls every runtime (and --vs) once, interleaved, and the "
        "median per row is reported (default 10)",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each before timing (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--detections", type=int, default=50, help="detections forced through each model's mask branch (default 50)"
    )
    parser.add_argument("--num-classes", type=int, default=80, help="number of classes of the preset (default 80)")
    parser.add_argument(
        "--runtime",
        default="eager",
        metavar="R[,R...]",
        help=f"runtimes to time in this process, comma-separated: {', '.join(RUNTIMES)} "
        "(default: %(default)s; onnxruntime needs the [export] extra)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        metavar="P[,P...]",
        help="precisions to time, comma-separated: fp32, bf16 (PyTorch autocast, OpenVINO's hint; needs native "
        "bf16), int8 (the INT8 export, on onnxruntime / openvino) (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        default=None,
        help="images to calibrate the int8 rows on (default: random images, for timing)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip counting GFLOPs (and the conv peak)")


def run(args: argparse.Namespace) -> int:
    if args.iters < 1 or args.warmup < 0:
        raise MaskkitError("--iters must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise MaskkitError(f"--device {args.device}: CUDA is not available on this machine")
    if args.size is not None and args.size < 1:
        raise MaskkitError(f"--size must be >= 1 px, got {args.size}")
    rows = run_bench(
        args.model,
        args.size,
        args.vs,
        args.iters,
        args.warmup,
        args.device,
        args.detections,
        args.num_classes,
        flops=not args.no_flops,
        runtimes=tuple(r.strip() for r in args.runtime.split(",") if r.strip()),
        precisions=tuple(p.strip() for p in args.precision.split(",") if p.strip()),
        weights=args.weights,
        calibration=args.calibration,
    )
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, {args.iters} timed runs after {args.warmup} warm-up"
    )
    print(format_rows(rows))
    print(f"cpu: {cpu_features().describe()}")
    return 0

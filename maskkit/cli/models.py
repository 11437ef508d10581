"""List model presets with their parameters (M) and GFLOPs at the preset's test size."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from maskkit.models.zoo import describe_preset, list_models


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="presets to describe (default: all)")
    parser.add_argument("--num-classes", type=int, default=80, help="number of classes K (default 80, as COCO)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting GFLOPs")
    parser.description = "List model presets with their parameters (M) and GFLOPs at the preset's test size."
    parser.epilog = (
        "GFLOPs count one multiply-add as one FLOP (as the paper and detectron2), for one 4:3 image\n"
        "at the preset's test size with 50 detections through the mask branch (CenterMask presets;\n"
        "'-' for SharpMask presets). Models are built on the meta device: no memory, no weights."
    )


def run(args: argparse.Namespace) -> int:
    names = args.names or list_models()
    rows = [
        describe_preset(n, args.num_classes, not args.no_flops)
        for n in tqdm(names, desc="models", leave=False, disable=len(names) < 4)
    ]
    print(f"{'name':<30} {'system':<11} {'params (M)':>10} {'test size':>10} {'GFLOPs':>8}")
    for r in rows:
        g = f"{r['gflops']:.1f}" if r["gflops"] is not None else "-"
        print(f"{r['name']:<30} {r['system']:<11} {r['params'] / 1e6:>10.2f} {r['test_size']:>10} {g:>8}")
    return 0

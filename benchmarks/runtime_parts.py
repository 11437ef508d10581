"""Where the time of CenterMask-Lite V-19 at 600x800 goes, per part of the pipeline, and what share
of the machine's conv peak (measured in the same run) each part reaches (issue #11).

fused + channels_last run step by step (the steps of ``CenterMask.inference``), median of 7;
GFLOPs per part from :func:`maskkit.models.flops.count_gflops`. With ``--onnx FILE`` also
OpenVINO's per-node counters (``PERF_COUNT``) of that exported file, grouped by part.

    PYTHONPATH=. python benchmarks/runtime_parts.py [--onnx lite_v19.onnx]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time

import torch

from maskkit.engine.bench import conv_peak_gflops
from maskkit.export.fuse import fuse_model
from maskkit.models.centermask.mask_head import select_class
from maskkit.models.flops import count_gflops
from maskkit.models.zoo import build, get_config
from maskkit.structures import paste_masks_in_image

SIZE = (600, 800)


def steps(m, img: torch.Tensor, rec: dict) -> tuple:
    """``CenterMask.inference`` for one image, each step timed into ``rec``."""
    t = [time.perf_counter()]

    def lap(name: str) -> None:
        t.append(time.perf_counter())
        rec[name] = t[-1] - t[-2]

    x = m.preprocess([m._test_resize(img)])
    lap("resize+normalise")
    c = m.backbone(x)
    lap("backbone")
    f = m.fpn(c)
    lap("fpn")
    h = m.fcos(f)
    lap("fcos head")
    d = m.detect(h, f, [SIZE], 50)[0]
    lap("decode+nms")
    rf = m.roi_features(f, d["boxes"], torch.zeros(len(d["boxes"]), dtype=torch.int64), [SIZE])
    lap("roi_align")
    probs = select_class(m.mask_head(rf), d["labels"]).float().sigmoid()
    lap("mask head")
    m.maskiou(rf, probs[:, None])
    lap("maskiou head")
    paste_masks_in_image(probs, d["boxes"], SIZE)
    lap("paste")
    return x, c, f, rf, probs


def openvino_parts(path: str, img: torch.Tensor) -> None:
    import openvino as ov

    from maskkit.export.runtime import OnnxRunner

    batch, size = OnnxRunner(path).preprocess(img.numpy())
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": 2, "PERF_COUNT": True})
    req = compiled.create_infer_request()
    agg, walls = collections.defaultdict(list), []
    for i in range(6):
        t0 = time.perf_counter()
        req.infer({"image": batch, "size": size})
        walls.append(time.perf_counter() - t0)
        acc = collections.Counter()
        for p in req.profiling_info:
            part = next((k for k in ("backbone", "fpn", "fcos") if k in p.node_name), "decode + mask branch")
            acc[(part, "conv" if "conv" in p.node_type.lower() else "other")] += p.real_time.total_seconds()
        for k, v in acc.items():
            agg[k].append(v)
    print(f"OpenVINO graph: {1e3 * statistics.median(walls[1:]):.0f} ms wall; node time by part:")
    for k in sorted(agg):
        print(f"  {k[0]:22s} {k[1]:6s} {1e3 * statistics.median(agg[k][1:]):7.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--onnx", default="")
    args = p.parse_args()
    torch.set_num_threads(2)
    print(f"load average {os.getloadavg()}")
    overrides = ["model.fcos.score_thresh=0.0", "model.fcos.detections_per_image=50", "model.min_size_test=600"]
    model = build(get_config("centermask_lite_v19", 80, overrides), backbone_weights=False).eval()
    m = fuse_model(model, channels_last=True)
    img = torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(0))
    peak = conv_peak_gflops()
    times = collections.defaultdict(list)
    with torch.inference_mode():
        x, c, f, rf, probs = steps(m, img, {})
        flops = {
            "backbone": count_gflops(lambda: m.backbone(x)),
            "fpn": count_gflops(lambda: m.fpn(c)),
            "fcos head": count_gflops(lambda: m.fcos(f)),
            "mask head": count_gflops(lambda: m.mask_head(rf)),
            "maskiou head": count_gflops(lambda: m.maskiou(rf, probs[:, None])),
        }
        for _ in range(7):
            rec = {}
            t0 = time.perf_counter()
            steps(m, img, rec)
            rec["total"] = time.perf_counter() - t0
            for k, v in rec.items():
                times[k].append(v)
        if args.onnx:
            openvino_parts(args.onnx, img)
    total, g = statistics.median(times.pop("total")), sum(flops.values())
    print(f"conv peak {peak:.1f} GFLOP/s (same run); fused_cl step by step: {1e3 * total:.0f} ms, {g:.1f} GFLOPs, ")
    print(f"  {g / total:.1f} GFLOP/s = {100 * g / total / peak:.0f} % of peak")
    for k, v in times.items():
        ms = 1e3 * statistics.median(v)
        line = f"  {k:18s} {ms:7.1f} ms {100 * ms / 1e3 / total:5.1f} %"
        if k in flops:
            rate = flops[k] / (ms / 1e3)
            line += f"  {flops[k]:6.2f} GFLOPs {rate:6.1f} GFLOP/s {100 * rate / peak:4.0f} % of peak"
        print(line)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()

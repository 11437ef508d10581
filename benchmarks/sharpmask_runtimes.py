"""DeepMask-ours and SharpMask full-image proposals on eager, fused and ONNX Runtime (issue #11).

480x640 random image, the paper's 7 scales (2^-2.5 .. 2^0.5), top 1000 proposals with masks
pasted at image size, random weights. Every runtime of both models times the same call
(``model([image])``) in this one process, and does the same work: before timing, each runtime's
proposals are checked against the eager model's (same scores to 1e-4, window boxes to 1e-3 px,
masks IoU >= 0.99 or one pixel apart, as the parity tests), so a runtime that computed
something else (an earlier version timed DeepMask's exported graph in the SharpMask ONNX row)
stops the script. The runs are interleaved (one call of each runtime per round), so a change
in machine load affects every row alike; median and min of ``--iters`` rounds after one
warm-up round. Each row also gives the network part alone (``propose``: trunk, heads,
refinement; ONNX Runtime: the graph) and the rest (pyramid, NumPy / torch mask paste).

    PYTHONPATH=. python benchmarks/sharpmask_runtimes.py --threads 2 --iters 3
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
from torchvision.ops import box_iou

from maskkit.engine.bench import build_runtime
from maskkit.export.numpy_ops import sharpmask_canvases
from maskkit.models.zoo import build, get_config


def _same(want: dict, got: dict) -> None:
    """The parity tests' criterion, as sets (near-equal scores may be ordered differently): each
    eager proposal has its own in ``got`` with box IoU >= 0.99, score within 1e-4 and mask IoU
    >= 0.99 (or one pixel apart), the nearest in rank of those."""
    assert len(got["scores"]) == len(want["scores"]), (len(got["scores"]), len(want["scores"]))
    iou = box_iou(want["boxes"], torch.as_tensor(np.asarray(got["boxes"]))).numpy()
    ws, gs = want["scores"].numpy(), np.asarray(got["scores"])
    wm, gm = want["masks"].numpy()[:, 0], np.asarray(got["masks"])[:, 0]
    free = set(range(len(gs)))
    for i in range(len(ws)):
        ok = [j for j in np.nonzero((iou[i] >= 0.99) & (np.abs(ws[i] - gs) <= 1e-4))[0] if j in free]
        ok = [j for j in ok if np.logical_xor(wm[i], gm[j]).sum() <= max(1, 0.01 * np.logical_or(wm[i], gm[j]).sum())]
        assert ok, f"proposal {i} (score {ws[i]:.6f}) has no match"
        free.remove(min(ok, key=lambda j: abs(j - i)))


def _network_ms(name: str, timed, image: torch.Tensor) -> float:
    """The network part alone: ``propose`` (torch) or the graph (ONNX Runtime)."""
    t0 = time.perf_counter()
    if name == "onnxruntime":
        runner = timed.runner
        feeds = {f"scale_{i}": c for i, c in enumerate(sharpmask_canvases(image.numpy(), runner.runtime))}
        t0 = time.perf_counter()
        runner.session.run(None, feeds)
    else:
        timed.propose(image)
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--runtimes", default="eager,fused,onnxruntime")
    p.add_argument("--models", default="deepmask_r50,sharpmask_r50", help="a DeepMask, then a SharpMask preset")
    args = p.parse_args()
    deep, sharp = args.models.split(",")
    torch.set_num_threads(args.threads)
    runtimes = args.runtimes.split(",")
    image = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    print(f"{torch.get_num_threads()} threads, {args.iters} interleaved rounds after 1 warm-up, 480x640, top 1000")
    print(f"load average before: {os.getloadavg()}", flush=True)
    timed, full, net = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for name in (deep, sharp):
            torch.manual_seed(0)
            model = build(get_config(name, None, ["model.top_n=1000"]), backbone_weights=False).eval()
            want = model([image])[0]
            for runtime in runtimes:
                timed[(name, runtime)] = build_runtime(model, runtime, tmp)
                _same(want, timed[(name, runtime)]([image])[0])  # same outputs = same work
                full[(name, runtime)], net[(name, runtime)] = [], []
        print("every runtime gives the eager model's proposals (checked)", flush=True)
        for rnd in range(args.iters + 1):
            for key, m in timed.items():
                t0 = time.perf_counter()
                m([image])
                ms = (time.perf_counter() - t0) * 1000
                n = _network_ms(key[1], m, image)
                if rnd:
                    full[key].append(ms)
                    net[key].append(n)
    print(f"load average after: {os.getloadavg()}")
    med = {k: statistics.median(v) for k, v in full.items()}
    for (name, runtime), v in full.items():
        nm = statistics.median(net[(name, runtime)])
        print(
            f"{name:<14} {runtime:<12} median {med[(name, runtime)]:8.0f} ms  min {min(v):8.0f} ms  "
            f"(network {nm:7.0f} ms, rest {med[(name, runtime)] - nm:6.0f} ms)"
        )
    for runtime in runtimes:
        ratio = med[(sharp, runtime)] / med[(deep, runtime)]
        print(f"{runtime}: SharpMask / DeepMask-ours = {ratio:.2f}x (paper: 1.65x)")
    for name in (deep, sharp):
        for runtime in runtimes[1:]:
            print(f"{name}: {runtime} / {runtimes[0]} latency = {med[(name, runtime)] / med[(name, runtimes[0])]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

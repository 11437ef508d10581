"""DeepMask-ours and SharpMask full-image proposals on eager, fused and ONNX Runtime (issue #11).

480x640 random image, the paper's 7 scales (2^-2.5 .. 2^0.5), top 1000 proposals with masks
pasted at image size, random weights; every runtime of both models times the same call
(``model([image])``) in this one process: median of ``--iters`` runs after one warm-up.

    PYTHONPATH=. python benchmarks/sharpmask_runtimes.py --threads 2 --iters 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from maskkit.engine.bench import build_runtime, time_model
from maskkit.models.zoo import build, get_config


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--runtimes", default="eager,fused,onnxruntime")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(3, 480, 640, generator=torch.Generator().manual_seed(0))
    print(f"{torch.get_num_threads()} threads, median of {args.iters} after 1 warm-up, 480x640, top 1000")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("deepmask_r50", "sharpmask_r50"):
            torch.manual_seed(0)
            model = build(get_config(name, None, ["model.top_n=1000"]), backbone_weights=False).eval()
            for runtime in args.runtimes.split(","):
                timed = build_runtime(model, runtime, tmp)
                median, times, out = time_model(timed, image, args.iters, 1)
                results[(name, runtime)] = median
                print(
                    f"{name:<14} {runtime:<12} proposals {len(out['boxes']):5d}  median {median:8.0f} ms  "
                    f"min {min(times):8.0f} ms",
                    flush=True,
                )
    for runtime in args.runtimes.split(","):
        ratio = results[("sharpmask_r50", runtime)] / results[("deepmask_r50", runtime)]
        print(f"{runtime}: SharpMask / DeepMask-ours = {ratio:.2f}x (paper: 1.65x)")
    for name in ("deepmask_r50", "sharpmask_r50"):
        for runtime in args.runtimes.split(",")[1:]:
            print(f"{name}: {runtime} / eager latency = {results[(name, runtime)] / results[(name, 'eager')]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

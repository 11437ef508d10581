"""Per-image inference time of DeepMask-ours vs SharpMask at the same scales (paper Table 2/3
timings: K40 GPU, DeepMask-ours 0.46 s, SharpMask 0.76 s per image).

Both models are randomly initialised (the timing does not depend on the weights: every scale
is computed in full and exactly ``top_n`` windows are decoded/refined whatever their scores).
Reported per image, median over ``--runs`` after one warm-up, wall-clock and process CPU time:

- ``propose``: multi-scale trunk + head C (+ shared skip features and batched refinement of
  the top N windows for SharpMask), window-level masks;
- ``predict``: ``propose`` + resizing/pasting every mask into the image, binarising and boxes
  (the data-contract output, ``model([image])``).

Usage::

    python benchmarks/sharpmask_cpu_time.py [--size 480 640] [--top-n 1000] [--threads 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch

from maskkit.models import zoo


def _median_time(fn, runs: int) -> tuple[float, float]:
    """Median wall-clock and process CPU seconds of ``fn()`` over ``runs`` after a warm-up (CPU
    time is the steadier number on a shared machine: with one thread it is the time the
    work took whenever it got the core)."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    ap.add_argument("--top-n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    image = torch.rand(3, *args.size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(
        f"# {args.size[0]}x{args.size[1]} image, top {args.top_n}, {args.threads} thread(s), device {device}, "
        f"CPU {_cpu_name()}, torch {torch.__version__}"
    )
    print("| model | scales | propose wall (s) | propose CPU (s) | predict wall (s) | predict CPU (s) |")
    print("|---|---|---|---|---|---|")
    for name in ("deepmask_r50", "sharpmask_r50"):
        cfg = zoo.get_config(name, overrides=[f"model.top_n={args.top_n}"])
        model = zoo.build_model(cfg.model).to(device).eval()

        def propose():
            with torch.inference_mode():
                model.propose(image)
            sync()

        def predict():
            with torch.inference_mode():
                model([image])
            sync()

        w_prop, c_prop = _median_time(propose, args.runs)
        w_pred, c_pred = _median_time(predict, args.runs)
        scales = ",".join(f"{s:g}" for s in cfg.model.scales)
        print(f"| {name} | 2^({scales}) | {w_prop:.2f} | {c_prop:.2f} | {w_pred:.2f} | {c_pred:.2f} |", flush=True)


if __name__ == "__main__":
    main()

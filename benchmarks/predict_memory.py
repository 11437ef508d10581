"""Peak RSS of ``maskkit predict`` on a 12 MP photo (4000x3000) with N detections (issue #14 item 1).

A ``centermask_lite_demo`` model with random weights (seed 0) and ``model.fcos.score_thresh=0``,
``model.fcos.detections_per_image=N``, so exactly N detections come out of every image; the
model's test resize (256..384 px) keeps the forward cheap, so what is measured is what happens
at full resolution (masks, results, the overlay). One fresh ``maskkit predict`` process per
run; its peak RSS is read with ``os.wait4`` (the child's own ``ru_maxrss``).

    PYTHONPATH=$PWD python benchmarks/predict_memory.py [--tree DIR] [-n 100] [--no-draw] [--size 3000x4000]

``--tree`` runs the ``maskkit`` package of another checkout (e.g. a ``git worktree`` of an older
commit) on the same inputs, so before/after are measured the same way. Prints one line:
``tree=... n=... image=HxW detections=... peak_rss=... MiB wall=... s``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_model(path: Path, n: int) -> Path:
    """The demo preset, random weights, score threshold 0 and N detections per image."""
    import torch

    from maskkit.checkpoint import save_model
    from maskkit.models.zoo import build_model, get_config

    torch.manual_seed(0)
    cfg = get_config("centermask_lite_demo", 3, ["model.fcos.score_thresh=0.0", f"model.fcos.detections_per_image={n}"])
    return save_model(path, build_model(cfg.model).eval(), cfg, ["a", "b", "c"], [1, 2, 3])


def make_photo(path: Path, h: int, w: int) -> Path:
    """A smooth colour photo-like JPEG (gradients and a few discs), seeded."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin((xx + yy) / 300.0)], axis=2)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(100, 600)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
    Image.fromarray((img * 255).astype(np.uint8)).save(path, quality=90)
    return path


def measure(tree: Path, weights: Path, photo: Path, out: Path, draw: bool) -> tuple[int, float, int]:
    """(peak RSS in bytes, wall seconds, exit code) of one ``maskkit predict`` process."""
    argv = [sys.executable, "-m", "maskkit", "predict", "--weights", str(weights), str(photo)]
    argv += ["--out", str(out), "--score-thr", "0", "--no-progress", "--batch", "1"] + ([] if draw else ["--no-draw"])
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with open(out.parent / "predict.log", "wb") as log:
        t0 = time.perf_counter()
        # cwd: `python -m` puts the working folder first on sys.path
        proc = subprocess.Popen(argv, env=env, cwd=tree, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss * 1024, time.perf_counter() - t0, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose maskkit package runs (default: this one)")
    ap.add_argument("-n", type=int, default=100, help="detections per image (default: %(default)s)")
    ap.add_argument("--size", default="3000x4000", help="photo HxW (default: %(default)s)")
    ap.add_argument("--no-draw", action="store_true", help="no overlay picture")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = make_model(tmp / "model.safetensors", args.n)
        photo = make_photo(tmp / "photo.jpg", h, w)
        peak, wall, rc = measure(Path(args.tree), weights, photo, tmp / "out", not args.no_draw)
        if rc != 0:
            sys.exit(f"predict exited {rc}:\n" + (tmp / "predict.log").read_text()[-3000:])
        dets = len(json.loads((tmp / "out" / "results.json").read_text()))
    print(
        f"tree={args.tree} n={args.n} image={h}x{w} draw={not args.no_draw} detections={dets} "
        f"peak_rss={peak / 2**20:.0f} MiB wall={wall:.1f} s"
    )


if __name__ == "__main__":
    main()

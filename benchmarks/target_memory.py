"""Peak RSS of ``maskkit data show`` and of one training step on one image with many small
annotations (issue #14 item 1: training-time masks).

Writes a COCO dataset of ONE ``--size`` x ``--size`` image with ``-n`` small polygons (5-12 px
triangles and quadrilaterals, seeded, 3 categories), then runs, in a fresh process each:

- ``show``: ``maskkit data show --num 1`` (the ground truth drawn);
- ``train``: ``maskkit train --model centermask_lite_demo --iters 1 --batch 1 --workers 0``
  (one optimiser step; the demo preset resizes the image to 224..288 px).

The peak RSS of the ``maskkit`` process is read with ``os.wait4``; with ``--cap-mib`` a watchdog
kills it once its RSS passes the cap (so a run that would take the machine's memory reports
"killed above the cap" instead). ``--tree`` runs the ``maskkit`` package of another checkout on
the same data (before/after).

    PYTHONPATH=$PWD python benchmarks/target_memory.py show -n 20000 [--size 1000] [--tree DIR] [--cap-mib 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def write_dataset(folder: Path, n: int, size: int) -> tuple[Path, Path]:
    """``(annotations json, image folder)`` of one image with ``n`` small polygons."""
    rng = np.random.default_rng(0)
    images = folder / "images"
    images.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(images / "many.png")
    anns = []
    for k in range(n):
        x, y = rng.uniform(2, size - 14, 2)
        s = rng.uniform(5, 12)
        pts = np.array([[x, y], [x + s, y + rng.uniform(0, s / 2)], [x + rng.uniform(0, s), y + s]])
        if k % 2:
            pts = np.vstack([pts, [x - rng.uniform(0, 2), y + s * 0.8]])
        xs, ys = pts[:, 0], pts[:, 1]
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        anns.append(
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": 1 + k % 3,
                "segmentation": [[round(float(v), 2) for v in pts.reshape(-1)]],
                "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())],
                "area": area,
                "iscrowd": 0,
            }
        )
    data = {
        "images": [{"id": 1, "file_name": "many.png", "height": size, "width": size}],
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
    }
    ann = folder / "instances_many.json"
    ann.write_text(json.dumps(data))
    return ann, images


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(argv: list[str], tree: Path, log: Path, cap_mib: float | None) -> tuple[float, float, int, bool]:
    """(peak RSS MiB, wall s, exit code, killed by the cap) of one ``python -m maskkit`` process."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    killed = threading.Event()
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(  # cwd: `python -m` puts the working folder first on sys.path
            [sys.executable, "-m", "maskkit", *argv], env=env, cwd=tree, stdout=out, stderr=subprocess.STDOUT
        )

        def watch() -> None:
            while proc.returncode is None and not killed.is_set():
                if cap_mib and _rss_mib(proc.pid) > cap_mib:
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)
                    return
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, proc.returncode, killed.is_set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["show", "train"])
    ap.add_argument("-n", type=int, default=20000, help="annotations on the image (default: %(default)s)")
    ap.add_argument("--size", type=int, default=1000, help="image side in px (default: %(default)s)")
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose maskkit package runs (default: this one)")
    ap.add_argument("--cap-mib", type=float, default=None, help="kill the run above this RSS (MiB)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ann, images = write_dataset(tmp / "data", args.n, args.size)
        if args.what == "show":
            argv = [
                "data",
                "show",
                "--ann",
                str(ann),
                "--images",
                str(images),
                "--out",
                str(tmp / "show"),
                "--num",
                "1",
            ]
        else:
            argv = ["train", "--model", "centermask_lite_demo", "--ann", str(ann), "--images", str(images)]
            argv += ["--out", str(tmp / "run"), "--iters", "1", "--batch", "1", "--workers", "0", "--device", "cpu"]
            argv += ["--no-progress"]
        peak, wall, rc, killed = run(argv, Path(args.tree), tmp / "log.txt", args.cap_mib)
        tail = (tmp / "log.txt").read_text(errors="replace")[-2000:]
    status = "killed above the cap" if killed else ("ok" if rc == 0 else f"exit {rc}")
    print(
        f"what={args.what} tree={args.tree} n={args.n} image={args.size}x{args.size} status={status.replace(' ', '_')} "
        f"peak_rss={peak:.0f} MiB wall={wall:.1f} s"
    )
    if rc != 0 and not killed:
        print(tail, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""ONNX Runtime profile of an exported CenterMask file (issue #11, benchmarks/export_runtimes.md).

Exports ``centermask_lite_v19`` (random weights, seed 0, 50 detections at 600x800) with this
tree's exporter unless ``--files`` names existing exports (e.g. one written by another tree,
same seed: the same weights), then runs each file with ``enable_profiling`` (2 intra-op
threads, 1 inter-op, sequential) and prints per operator type the kernel time per run, and the
split between the dense part (backbone, FPN, FCOS head and the layout reorders) and the rest
(decoding, NMS, RoIAlign, mask and MaskIoU heads). ``--nodes N`` lists the N costliest nodes.

    PYTHONPATH=. python benchmarks/ort_profile.py [--files a.onnx,b.onnx] [--runs 4] [--nodes 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile

import numpy as np
import onnxruntime as ort


def export_this_tree(path: str) -> str:
    import torch

    from maskkit.engine.export import export_model
    from maskkit.models.zoo import build, get_config

    torch.manual_seed(0)
    overrides = ["model.fcos.score_thresh=0.0", "model.fcos.detections_per_image=50", "model.min_size_test=600"]
    return str(export_model(build(get_config("centermask_lite_v19", 80, overrides), backbone_weights=False), path))


def profile_file(path: str, runs: int, tmp: str) -> tuple[collections.Counter, collections.Counter, list[float]]:
    from maskkit.export.runtime import OnnxRunner

    img = np.random.default_rng(0).random((3, 600, 800), dtype=np.float32)
    batch, size = OnnxRunner(path).preprocess(img)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    opts.enable_profiling, opts.profile_file_prefix, opts.log_severity_level = True, f"{tmp}/ort", 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):  # the first run warms up
        sess.run(None, {"image": batch, "size": size})
    events = json.load(open(sess.end_profiling()))
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    warm_end = model_runs[0]["ts"] + model_runs[0]["dur"]  # the first run warms up: not counted
    walls = [e["dur"] / 1000 for e in model_runs[1:]]
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > warm_end:
            by_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
            by_node[e["name"][: -len("_kernel_time")]] += e["dur"] / 1000 / runs
    return by_op, by_node, walls


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--files", default="")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--nodes", type=int, default=0)
    args = p.parse_args()
    print(f"onnxruntime {ort.__version__}, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        files = args.files.split(",") if args.files else [export_this_tree(f"{tmp}/lite_v19.onnx")]
        res = {f: profile_file(f, args.runs, tmp) for f in files}
    names = [os.path.basename(f) for f in files]
    print(f"{'ms per run':24s}" + "".join(f"{n:>24s}" for n in names))
    print(f"{'model_run (wall, median)':24s}" + "".join(f"{np.median(r[2]):24.0f}" for r in res.values()))
    ops = sorted(set().union(*[r[0] for r in res.values()]), key=lambda o: -max(r[0][o] for r in res.values()))
    for o in ops[:25]:
        print(f"{o:24s}" + "".join(f"{r[0][o]:24.1f}" for r in res.values()))
    dense = re.compile(r"backbone|fpn|fcos|Reorder")
    for part, keep in (("dense part", True), ("rest (decode, NMS, masks)", False)):
        sums = [sum(v for k, v in r[1].items() if bool(dense.search(k)) == keep) for r in res.values()]
        print(f"{part:24s}" + "".join(f"{s:24.1f}" for s in sums))
    for f, r in res.items():
        if args.nodes:
            print(f)
            for k, v in r[1].most_common(args.nodes):
                print(f"  {v:8.2f} ms  {k}")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()

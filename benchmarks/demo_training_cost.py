"""Training cost of the demo model: FLOPs per component and seconds per image (issue #12, item 1).

Compares the previous demo model (VoVNetV2-19-slim-dw, FPN/heads 64, MaskIoU 64/256, the mask
branch on GT + top 20 detections from P3-P5, AdamW looping over the tensors, torchvision's
RoIAlign backward; the demo until 2026-11-26) with today's ``centermask_lite_demo`` (and the
engine's fused AdamW and separable RoIAlign backward)
preset at the **same image size and batch**, in one process: the two models' steps are
interleaved (A, B, A, B, ...) so a change of machine load hits both, and the median per model
is printed. FLOPs are counted with ``torch.utils.flop_counter`` over forward + backward of one
step (one multiply-add = 1 FLOP) and split by the model's top-level parts.

    PYTHONPATH=. python benchmarks/demo_training_cost.py --size 192 --batch 8 --rounds 12
    PYTHONPATH=. python benchmarks/demo_training_cost.py --size 128 --batch 8 --rounds 12
    PYTHONPATH=. python benchmarks/demo_training_cost.py --size 192 --threads 1 --cpu-time   # loaded machine

Images are real demo scenes (``maskkit data synth --scenes demo`` at ``--size``), written to a
temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import roi_align

from maskkit.checkpoint import load_model
from maskkit.data.synthetic import SCENES, generate
from maskkit.engine.training import load_datasets
from maskkit.engine.training.schedule import build_optimizer
from maskkit.models.centermask import mask_head
from maskkit.models.roi_align import roi_align_adaptive
from maskkit.models.zoo import build_model, get_config

PREVIOUS = [  # the demo model before issue #12, on top of today's preset
    "model.backbone.variant=V-19-slim-dw",
    "model.fpn_channels=64",
    "model.mask.channels=64",
    "model.mask.maskiou_channels=64",
    "model.mask.maskiou_fc_dim=256",
    "model.mask.train_detections=20",
    "model.mask.k_min=3",  # Eq. 2 over P3-P5 (the demo pools from P2 since 2026-11-26)
    "model.mask.k_max=5",
    "model.backbone.freeze_at=0",  # trained whole (the demo freezes its pretrained stem + stage 2 since 2026-11-26)
]


def _torchvision_roi_align(feat, rois, output_size, spatial_scale):
    return roi_align(feat, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=0, aligned=True)


PARTS = ("backbone", "fpn", "fcos", "mask_head", "maskiou")


def gmac_per_image(model, batch) -> dict[str, float]:
    """GMAC (forward + backward) per image of one training step, per part and in total."""
    with FlopCounterMode(display=False) as counter:
        sum(model(*batch).values()).backward()
    model.zero_grad()
    counts = counter.get_flop_counts()
    n = len(batch[0])
    out = {p: sum(counts.get(f"CenterMask.{p}", {}).values()) / 2e9 / n for p in PARTS}
    out["total"] = sum(counts["Global"].values()) / 2e9 / n
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time steps by the process's CPU time instead of wall time (use with --threads 1: on a "
        "loaded machine the CPU seconds one thread spends per image are what the budget buys)",
    )
    p.add_argument(
        "--init",
        nargs=2,
        metavar=("PREVIOUS", "NEW"),
        help="model files to start the two models from (e.g. the last checkpoints of a previous-demo run "
        "and of a new one): trained detectors send their detections to the mask branch, untrained ones "
        "only the GT boxes",
    )
    args = p.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    sizes = [f"data.min_size_train=[{args.size}]", f"data.max_size_train={args.size}"]
    with tempfile.TemporaryDirectory() as tmp:
        scene = dict(SCENES["demo"], size=args.size)
        generate(tmp, num_train=4 * args.batch, num_val=0, seed=0, progress=False, **scene)
        cfg = get_config("centermask_lite_demo", None, sizes)
        train, _ = load_datasets(cfg, tmp)
        batches = []
        for k in range(4):
            samples = [train[k * args.batch + i] for i in range(args.batch)]
            batches.append(([s[0] for s in samples], [s[1] for s in samples]))
    models = {}
    for name, extra in (("previous demo model", PREVIOUS), ("centermask_lite_demo", [])):
        cfg = get_config("centermask_lite_demo", None, sizes + extra)
        cfg.model.num_classes = len(train.class_names)
        torch.manual_seed(0)
        model = build_model(cfg.model, backbone_weights=False).train()
        if args.init:
            init = args.init[0] if extra else args.init[1]
            model.load_state_dict(load_model(init).state_dict())  # strict: the same architecture
        # each with its engine's optimizer: the previous demo's engine built AdamW with torch's CPU
        # default (a loop over the tensors), today's builds it fused (maskkit/engine/schedule.py)
        opt = (
            torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
            if extra
            else build_optimizer(model, cfg.train)
        )
        models[name] = (model, opt, gmac_per_image(model, batches[0]), [])
    # the previous demo's engine pooled with torchvision's RoIAlign (its scalar CPU backward)
    engines = {"previous demo model": _torchvision_roi_align, "centermask_lite_demo": roi_align_adaptive}
    for r in range(args.rounds):
        for name, (model, opt, _, times) in models.items():
            mask_head.roi_align_adaptive = engines[name]
            images, targets = batches[r % len(batches)]
            t0 = clock()
            loss = sum(model(images, targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(clock() - t0)
    what = "CPU" if args.cpu_time else "wall"
    n = args.rounds - 2
    print(f"{args.size} px, batch {args.batch}, {torch.get_num_threads()} threads, median {what} time of {n} steps")
    print(f"{'model':<22} {'params':>7} " + " ".join(f"{p:>9}" for p in PARTS + ("total",)) + "  s/step  ms/image")
    medians = {}
    for name, (model, _, gmac, times) in models.items():
        med = medians[name] = statistics.median(times[2:])
        params = sum(t.numel() for t in model.parameters()) / 1e6
        row = " ".join(f"{gmac[p]:9.3f}" for p in PARTS + ("total",))
        print(f"{name:<22} {params:6.2f}M {row}  {med:6.3f}  {med / args.batch * 1000:7.1f}")
    a, b = medians.values()
    print(f"training images per CPU second: {a / b:.2f}x the previous demo model (GMAC per image f+b; same images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

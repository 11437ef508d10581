"""The demo recipes (one :class:`DemoPlan` per system: synthetic data, stages, settings) and
:func:`run_demo`: synthesise the data, train, evaluate, draw overlays — the embedded default
behind ``maskkit demo`` (:mod:`maskkit.cli.demo` lists what the run folder holds)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from maskkit.checkpoint import load_model
from maskkit.data.synthetic import generate, scene_settings
from maskkit.engine.inference.files import draw_prediction
from maskkit.engine.inference.predictor import infer_batches, mask_threshold_of
from maskkit.engine.systems import system_of
from maskkit.engine.training import fit, load_datasets
from maskkit.engine.training.rng import seed_everything
from maskkit.errors import MaskkitError
from maskkit.evaluation import write_metrics
from maskkit.models.zoo import build, get_config
from maskkit.viz import save_image

__all__ = ["DemoPlan", "PLANS", "plan", "run_demo"]


@dataclass
class DemoPlan:
    """Data and stages of one demo run (see benchmarks/synthetic_protocol.md). The model and
    training settings live in the stages' presets, so ``maskkit train --model PRESET --data
    DIR`` on ``maskkit data synth --scenes SCENES`` data runs the same recipe."""

    num_train: int
    num_val: int
    scenes: str  # a key of maskkit.data.synthetic.SCENES
    seed: int
    overrides: tuple[str, ...] = ()  # applied on top of each stage's preset (quick runs only)
    # (preset, training steps) per stage; a later stage starts from the previous stage's model
    # (SharpMask: stage 1 trains DeepMask, stage 2 the refinement modules).
    stages: tuple[tuple[str, int], ...] = (("centermask_lite_demo", 1500),)
    image_size: int | None = None  # overrides the scenes' image size (quick runs)

    def scene(self) -> dict:
        """The keyword arguments of ``generate`` for this plan's scenes."""
        return scene_settings(self.scenes, size=self.image_size)


# CenterMask-Lite demo: the easier "demo" scenes (128 px, 1-3 objects, no clutter) and the
# centermask_lite_demo recipe (benchmarks/demo_training_cost.md), sized to finish in ~10 CPU minutes.
_CENTERMASK = DemoPlan(num_train=2000, num_val=100, scenes="demo", seed=0)
_CENTERMASK_QUICK = DemoPlan(
    num_train=8,
    num_val=4,
    scenes="demo",
    seed=0,
    image_size=96,
    overrides=(
        "data.min_size_train=[96]",
        "data.max_size_train=128",
        "model.min_size_test=96",
        "model.max_size_test=128",
        "train.batch_size=2",
        "train.warmup_iters=1",
        "train.log_period=1",
    ),
    stages=(("centermask_lite_demo", 3),),
)
# SharpMask: stage 1 (DeepMask trunk + heads), then stage 2 (refinement only), each with these overrides,
# on the demo scenes (the same data as the CenterMask demo). The presets' AdamW + cosine recipe and these
# stage lengths: benchmarks/synthetic_protocol.md, "SharpMask demo recipe" (2026-11-26), curve and figures.
_SHARPMASK = DemoPlan(
    num_train=2000,
    num_val=100,
    scenes="demo",
    seed=0,
    overrides=(
        "train.eval_period=0",
        "train.log_period=10",
        "model.top_n=100",
        "eval.max_dets=[10,100]",
    ),
    stages=(("deepmask_demo", 2000), ("sharpmask_demo", 600)),
)
_SHARPMASK_QUICK = DemoPlan(
    num_train=6,
    num_val=3,
    scenes="benchmark",
    image_size=96,
    seed=0,
    overrides=(
        "train.eval_period=0",
        "train.log_period=1",
        "data.num_workers=0",
        "train.batch_size=4",
        "model.top_n=20",
        "eval.max_dets=[10,20]",
    ),
    stages=(("deepmask_demo", 2), ("sharpmask_demo", 2)),
)
PLANS = {
    ("centermask", False): _CENTERMASK,
    ("centermask", True): _CENTERMASK_QUICK,
    ("sharpmask", False): _SHARPMASK,
    ("sharpmask", True): _SHARPMASK_QUICK,
}


def plan(system: str, quick: bool) -> DemoPlan:
    """The demo recipe of ``system`` (the one home of the demo's data, model and training settings)."""
    if (system, quick) not in PLANS:
        raise MaskkitError(f"--system must be centermask or sharpmask, got {system!r}")
    return PLANS[(system, quick)]


def _make_data(out: Path, p: DemoPlan, progress: bool) -> Path:
    """Synthesise the dataset once per plan (a stamp file records what was written)."""
    root = out / "data"
    stamp = root / "demo_plan.json"
    scene = p.scene()
    want = {"num_train": p.num_train, "num_val": p.num_val, "seed": p.seed, **scene}
    if stamp.is_file() and json.loads(stamp.read_text()) == want:
        return root
    generate(root, num_train=p.num_train, num_val=p.num_val, seed=p.seed, progress=progress, **scene)
    stamp.write_text(json.dumps(want))
    return root


def _overlays(model, val, out: Path, n: int, score_thr: float) -> list[Path]:
    """Draw the first ``n`` validation predictions (same inference path as predict/eval)."""
    system = system_of(model.info.config)
    paths = []
    images = [val.load_image(i) for i in range(min(n, len(val)))]
    threshold = mask_threshold_of(model)
    for i, (image, pred) in enumerate(zip(images, infer_batches(model, images, batch_size=2))):
        pred, thr = system.for_overlay(pred, score_thr)
        path = out / "overlays" / f"val_{val.image_ids[i]:06d}.png"
        save_image(draw_prediction(image, pred, model.info.class_names, thr, threshold), path)
        paths.append(path)
    return paths


def _stage_iters(p: DemoPlan, k: int, default: int, iters: int | None) -> int:
    """Steps of stage ``k``: the plan's, or ``iters`` for the first stage and the plan's proportion
    of it after (SharpMask 2000 + 600: ``--iters 500`` trains 500 + 150)."""
    return default if iters is None else max(1, iters if k == 0 else iters * default // p.stages[0][1])


def run_demo(
    out: str | Path = "runs/demo",
    system: str = "centermask",
    quick: bool = False,
    device: str = "cpu",
    iters: int | None = None,
    extra_overrides: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole demo; returns ``{"metrics", "out", "seconds", "overlays", "data"}``, or, when a
    SIGINT/SIGTERM stopped training, ``{"interrupted": signal number, "step", "model", "out", "seconds"}``
    (the checkpoint of that step is saved; no evaluation or drawing follows)."""
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = plan(system, quick)
    print(
        f"[1/3] synthesising {p.num_train} train + {p.num_val} val images ({p.scenes} scenes, "
        f"{p.scene()['size']} px) in {out / 'data'}",
        file=sys.stderr,
    )
    root = _make_data(out, p, progress)
    overrides = list(p.overrides) + list(extra_overrides or [])
    summary, previous = {}, None
    for k, (preset, default_iters) in enumerate(p.stages):
        last = k == len(p.stages) - 1
        run = out if last else out / f"stage{k + 1}"
        stage_overrides = overrides + [f"train.max_iter={_stage_iters(p, k, default_iters, iters)}"]
        if previous is not None:
            stage_overrides.append(f"train.init_weights={previous}")
        cfg = get_config(preset, None, stage_overrides)
        train, val = load_datasets(cfg, root)  # the same datasets as `maskkit train --data ROOT`
        sys_ = system_of(cfg)
        if sys_.num_classes(train) is not None:
            cfg.model.num_classes = sys_.num_classes(train)
        print(
            f"[2/3] training {preset} ({cfg.train.max_iter} steps, batch {cfg.train.batch_size}) -> {run}"
            + (f", then evaluating on the {len(val)} validation images" if last else ""),
            file=sys.stderr,
        )
        seed_everything(cfg.train.seed)
        model = build(cfg, *sys_.label_mapping(train))
        summary = fit(
            cfg, model, train, run, val_set=val if last else None, device=device, progress=progress, overwrite=True
        )  # the demo regenerates its own folder
        previous = run / "model_last.safetensors"
        if summary["interrupted"]:  # stopped by SIGINT/SIGTERM: what was saved stays, nothing more runs
            return {
                "interrupted": summary["signal"],
                "step": summary["step"],
                "out": str(out),
                "model": str(previous),
                "seconds": time.time() - t0,
            }
    metrics = summary["last_eval"]
    write_metrics(metrics, out)  # the same keys as `maskkit eval`
    model = load_model(out / "model_best.safetensors", device=device)
    print("[3/3] drawing overlays", file=sys.stderr)
    overlays = _overlays(model, val, out, 6, 0.3)
    seconds = time.time() - t0
    return {
        "metrics": metrics,
        "out": str(out),
        "seconds": seconds,
        "overlays": [str(o) for o in overlays],
        "data": str(root),
    }

"""Train a model preset on a COCO-format dataset (one process, or many with torchrun).

    maskkit train --model centermask_lite_v19 --data DIR [--out RUN] [--resume] [--set k=v ...]
    torchrun --nproc_per_node=N -m maskkit train --model ... --data DIR

SGD + momentum + weight decay (AdamW with ``train.optimizer=adamw``), linear warmup then step
or cosine decay (``engine/schedule``),
gradient clipping and accumulation, bf16/fp16 autocast, seeded and resumable. The run folder
holds ``model_last.safetensors`` / ``model_best.safetensors`` (self-contained model files),
``state_last.pt`` (optimiser, schedule, step, RNG states), ``metrics.jsonl`` and PNG plots.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from maskkit.checkpoint import (
    check_compatible,
    load_state_into,
    load_train_state,
    read_model_file,
    save_model,
    save_train_state,
)
from maskkit.engine.distributed import (
    GlobalBatchSampler,
    SeededSamples,
    all_reduce_sum,
    barrier,
    dist_info,
)
from maskkit.engine.schedule import build_optimizer, build_scheduler
from maskkit.errors import CheckpointError, MaskkitError

__all__ = ["TrainingError", "fit", "configure_parser", "run_cli", "resolve_device", "rng_state", "set_rng_state"]

MODEL_LAST, MODEL_BEST, STATE_LAST, METRICS = "model_last.safetensors", "model_best.safetensors", "state_last.pt", "metrics.jsonl"


class TrainingError(MaskkitError):
    """Training cannot go on (non-finite loss, ...); the message says where and what was kept."""


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu (per-rank GPU under torchrun)."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MaskkitError(f"--device {device}: CUDA is not available on this machine")
        info = dist_info()
        if info.distributed and dev.index is None:
            dev = torch.device("cuda", info.local_rank)
    return dev


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """torch / CUDA / numpy / python RNG states as plain tensors (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- signals


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves at the next step boundary and exits 0."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.signal = signum

    def __enter__(self) -> "StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- data


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(torch.Tensor).to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def collate_pairs(batch: list[tuple[Any, dict]]) -> tuple[list, list]:
    """[(image, target), ...] -> ([images], [targets]) (images of different sizes stay a list)."""
    return [b[0] for b in batch], [b[1] for b in batch]


def image_batches(dataset, cfg, info, start_step: int, collate_fn: Callable = collate_pairs,
                  shuffle: bool = True) -> Iterator:
    """Infinite (images, targets) micro-batches: this rank's shard of each seeded global batch."""
    tc = cfg.train
    sampler = GlobalBatchSampler(len(dataset), tc.batch_size, tc.seed, info.rank, info.world_size,
                                 tc.accum_steps, start_step, shuffle)
    workers = int(getattr(cfg.data, "num_workers", 0))
    loader = torch.utils.data.DataLoader(SeededSamples(dataset), batch_sampler=sampler, num_workers=workers,
                                         collate_fn=collate_fn, persistent_workers=workers > 0)
    return iter(loader)


def window_batches(dataset, cfg, info, start_step: int) -> Iterator:
    """SharpMask per-patch training (REFERENCE "Training data"): window ``p`` of the global
    stream is ``WindowSampler`` item ``p``, a deterministic function of (seed, p); the sampler
    makes all windows of one global step the same kind (all-mask or all-score)."""
    from maskkit.data.windows import WindowSampler, collate_windows

    tc = cfg.train
    windows = WindowSampler(dataset, cfg.model.sampler, pixel_mean=tuple(cfg.model.pixel_mean),
                            batch_size=tc.batch_size, length=tc.batch_size * max(1, tc.max_iter), seed=tc.seed)
    return image_batches(windows, cfg, info, start_step, collate_windows, shuffle=False)


# --------------------------------------------------------------------------- the loop


def _autocast(device: torch.device, amp: str):
    if amp in ("", "none"):
        return contextlib.nullcontext()
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        if device.type != "cuda":
            raise MaskkitError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise MaskkitError(f"train.amp must be none, bf16 or fp16, got {amp!r}")


def _log_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _write_plots(out: Path) -> None:
    try:
        from maskkit.viz import plot_metrics
    except ImportError:
        return
    plot_metrics(out / METRICS, out / "curves.png")


def fit(
    cfg,
    model: nn.Module,
    train_set,
    out_dir: str | Path,
    *,
    val_set=None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    class_names: list[str] | None = None,
    cat_ids: list[int] | None = None,
    progress: bool = True,
    batches: Callable | None = None,
) -> dict:
    """Train ``model`` for ``cfg.train.max_iter`` optimiser steps; returns a summary dict
    (``step``, ``interrupted``, ``best``, ``last_eval``, paths).

    ``train_set`` yields ``(image [3,H,W], target)``; ``batches(train_set, cfg, info, start_step)``
    turns it into an infinite stream of ``(inputs, targets)`` micro-batches (default: image
    lists; SharpMask: windows). Under torchrun the model is wrapped in DDP; only rank 0
    writes files. Raises :class:`TrainingError` on a non-finite loss (files untouched).
    """
    tc, info, device = cfg.train, dist_info(), torch.device(device)
    _autocast(device, tc.amp)  # validates train.amp for this device before any work
    out = Path(out_dir)
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
    paths = {"model_last": out / MODEL_LAST, "model_best": out / MODEL_BEST, "state_last": out / STATE_LAST,
             "metrics": out / METRICS, "curves": out / "curves.png", "results": out / "results.json"}
    if batches is None:
        batches = window_batches if cfg.model.system == "sharpmask" else image_batches
    names = list(class_names or getattr(train_set, "class_names", []) or [])
    cats = list(cat_ids or getattr(train_set, "cat_ids", []) or range(1, len(names) + 1))
    if names and len(names) != int(cfg.model.num_classes):
        raise MaskkitError(f"the dataset has {len(names)} classes but model.num_classes={cfg.model.num_classes}")

    if hasattr(model, "set_stage"):
        model.set_stage(int(tc.stage))
    model.to(device).train()
    start_step, best, resumed_state = 0, None, None
    if resume:
        mf = read_model_file(paths["model_last"])
        check_compatible(mf.config, cfg, mf.path, "--resume checkpoint")
        resumed_state = load_train_state(paths["state_last"])
        if int(resumed_state["step"]) != mf.step:
            raise CheckpointError(f"{paths['state_last']}: step {resumed_state['step']} does not match "
                                  f"{mf.path} (step {mf.step}); the run folder is inconsistent")
        load_state_into(model, mf.state_dict, mf.path)
        start_step, best = int(resumed_state["step"]), resumed_state.get("best")
    elif tc.init_weights:  # fine-tuning start: fitting tensors loaded, class-specific layers fresh
        from maskkit.convert.finetune import load_init_weights

        reinit = load_init_weights(model, tc.init_weights)
        if info.main:
            print(f"maskkit: started from {tc.init_weights}" + (f"; re-initialised for {cfg.model.num_classes} classes: "
                  f"{', '.join(reinit)}" if reinit else ""), file=sys.stderr)

    optimizer = build_optimizer(model, tc)
    scheduler = build_scheduler(optimizer, tc)
    if resumed_state is not None:
        optimizer.load_state_dict(resumed_state["optimizer"])
        scheduler.load_state_dict(resumed_state["scheduler"])
        set_rng_state(resumed_state["rng"])
    elif start_step == 0 and info.main and paths["metrics"].exists():
        paths["metrics"].unlink()  # a fresh run in an old folder starts a fresh log

    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    scaler = torch.amp.GradScaler("cuda", enabled=tc.amp == "fp16" and device.type == "cuda")
    with torch.random.fork_rng(devices=[]):  # DataLoader draws a base seed: keep the step RNG stream intact
        stream = batches(train_set, cfg, info, start_step)
    tb = _tensorboard(out) if info.main else None

    def save_last(step: int) -> None:
        if info.main:
            save_model(paths["model_last"], model, cfg, names, cats, step)
            save_train_state(paths["state_last"], {
                "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_state(), "best": best})
            if step < tc.max_iter and paths["metrics"].exists():
                _write_plots(out)  # curves as training goes (the final ones are drawn after the last eval)
        barrier()

    def run_eval(step: int) -> dict | None:
        nonlocal best
        if val_set is None:
            return None
        from maskkit.engine.predict import evaluate_model, primary_metric

        metrics = evaluate_model(model, val_set, cfg=cfg, device=device, label_to_cat_id=dict(enumerate(cats, 1)),
                                 progress=False, results_path=paths["results"] if info.main else None)
        model.train()
        if info.main:
            key, value = primary_metric(metrics)
            # headline figures only in the log/curves (the full table is in metrics.json / results)
            curve = {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))
                     and (k.rpartition("/")[2] in ("AP", "AP50", "AP75") or "/AR@" in k)}
            _log_line(paths["metrics"], {"step": step, **curve})
            if tb:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        tb.add_scalar(f"eval/{k}", v, step)
            if best is None or value > best["value"]:
                best = {"key": key, "value": float(value), "step": step}
                save_model(paths["model_best"], model, cfg, names, cats, step)
        return metrics

    bar = None
    if progress and info.main:
        from tqdm import tqdm

        bar = tqdm(total=tc.max_iter, initial=start_step, desc="train", unit="it", dynamic_ncols=True)
    summary = {"step": start_step, "interrupted": False, "best": best, "last_eval": None,
               **{k: str(v) for k, v in paths.items()}}
    step, t0, window = start_step, time.time(), []
    try:
        with StopFlag() as stop:
            while step < tc.max_iter:
                optimizer.zero_grad(set_to_none=True)
                logged: dict[str, float] = {}
                for micro in range(tc.accum_steps):
                    inputs, targets = _to_device(next(stream), device)
                    sync = contextlib.nullcontext() if (not info.distributed or micro == tc.accum_steps - 1) \
                        else net.no_sync()
                    with sync:
                        with _autocast(device, tc.amp):
                            losses = net(inputs, targets)
                        keys = sorted(losses)
                        loss = sum(losses[k].float() for k in keys)
                        # One all-reduce per micro-batch: loss terms (for logging and the finiteness
                        # check, which every rank must agree on) and the stop flag.
                        vec = torch.stack([losses[k].detach().float() for k in keys]
                                          + [torch.tensor(float(stop.signal is not None), device=device)])
                        vec = all_reduce_sum(vec.to(device))
                        total = float(vec[:-1].sum()) / info.world_size
                        if not math.isfinite(total):
                            kept = paths["model_last"] if paths["model_last"].exists() else None
                            raise TrainingError(
                                f"loss became {total} at step {step + 1} "
                                f"({', '.join(f'{k}={float(v) / info.world_size:.4g}' for k, v in zip(keys, vec))}); "
                                + (f"last good checkpoint: {kept}" if kept else "no checkpoint was written yet")
                                + " (lower train.lr, raise train.warmup_iters or set train.clip_grad_norm)")
                        if float(vec[-1]) > 0 and stop.signal is None:
                            stop.signal = signal.SIGTERM  # another rank was signalled
                        for k, v in zip(keys, vec[:-1].tolist()):
                            logged[k] = logged.get(k, 0.0) + v / info.world_size / tc.accum_steps
                        scaler.scale(loss / tc.accum_steps).backward()
                if tc.clip_grad_norm > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                             tc.clip_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                summary["step"] = step
                window.append(sum(logged.values()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{window[-1]:.3f}", lr=f"{lr:.2e}", refresh=False)
                if info.main and (step % max(1, tc.log_period) == 0 or step == tc.max_iter):
                    rec = {"step": step, "lr": lr, "loss": float(np.mean(window)),
                           **{f"loss/{k}": v for k, v in logged.items()}, "time": round(time.time() - t0, 2)}
                    _log_line(paths["metrics"], rec)
                    if tb:
                        for k, v in rec.items():
                            if k not in ("step", "time"):
                                tb.add_scalar(k, v, step)
                    window = []
                if stop.signal is not None:
                    save_last(step)
                    summary["interrupted"] = True
                    if info.main:
                        print(f"\nmaskkit: stopped by signal {stop.signal} at step {step}; checkpoint saved to "
                              f"{paths['model_last']} (continue with --resume)", file=sys.stderr)
                    break
                if tc.eval_period > 0 and step % tc.eval_period == 0 and step < tc.max_iter:
                    summary["last_eval"] = run_eval(step)
                if step % max(1, tc.checkpoint_period) == 0 or step == tc.max_iter:
                    save_last(step)
            else:
                summary["last_eval"] = run_eval(step)
    finally:
        if bar is not None:
            bar.close()
        if tb:
            tb.close()
    if info.main and paths["metrics"].exists():
        _write_plots(out)  # losses, lr and AP/AR so far (also written at every checkpoint)
    summary["best"] = best
    return summary


# --------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a model preset on a COCO-format dataset. Defaults follow each paper (see "
        "`maskkit models`); --set train.x=y changes any setting.\n\n"
        "Batch and learning rate: train.batch_size is the GLOBAL batch (images, or windows for "
        "SharpMask, per optimiser step, summed over processes and accumulation steps). "
        "--batch N applies the linear scaling rule lr = base_lr x N / base_batch (base_* = the "
        "preset's values) unless train.lr is set explicitly.\n\n"
        "Distributed: torchrun --nproc_per_node=N -m maskkit train ... (NCCL on GPUs, Gloo on CPUs).")
    parser.add_argument("--model", required=True, help="preset name (see `maskkit models`)")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="COCO-style root with annotations/instances_<split>*.json and image folders; the "
                             "splits are data.train_split / data.val_split (default train / val)")
    parser.add_argument("--ann", metavar="FILE", default=None,
                        help="explicit training instances JSON (with --images; no periodic evaluation)")
    parser.add_argument("--images", metavar="DIR", default=None, help="image folder for --ann")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<model>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <out>/model_last.safetensors + state_last.pt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch; scales train.lr linearly unless train.lr is --set")
    parser.add_argument("--iters", type=int, default=None, help="shortcut for --set train.max_iter=N")
    parser.add_argument("--workers", type=int, default=None, help="data-loading workers per process")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (e.g. --set train.lr=0.005 --set train.amp=bf16)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_config(model: str, num_classes: int, overrides: list[str], batch: int | None = None,
                 iters: int | None = None, workers: int | None = None):
    """Preset + overrides, with ``--batch`` applying the linear scaling rule to ``train.lr``."""
    from maskkit.engine.schedule import scale_lr
    from maskkit.models.zoo import get_config

    cfg = get_config(model, num_classes, overrides)
    if batch is not None:
        base = get_config(model, num_classes)
        cfg.train.batch_size = batch
        if not any(o.strip().startswith("train.lr=") for o in overrides):
            cfg.train.lr = scale_lr(base.train.lr, base.train.batch_size, batch)
    if iters is not None:
        cfg.train.max_iter = iters
    if workers is not None:
        cfg.data.num_workers = workers
    return cfg


def load_datasets(args: argparse.Namespace, cfg) -> tuple[Any, Any]:
    """(train set with train transforms, val set without transforms or None) for ``cfg.data``.

    ``--data ROOT`` finds both splits (``cfg.data.train_split`` / ``val_split``); ``--ann``
    + ``--images`` give the training set only (no periodic evaluation)."""
    from maskkit.data.coco import CocoDataset, resolve_data
    from maskkit.data.transforms import build_train_transforms

    explicit = args.ann is not None or args.images is not None
    ann, images = resolve_data(args.data, cfg.data.train_split, args.ann, args.images)
    if cfg.model.system == "sharpmask":  # windows bring their own scale jitter and flips
        train_set = CocoDataset(ann, images, remove_images_without_annotations=True)
    else:
        train_set = CocoDataset(ann, images, transforms=build_train_transforms(cfg.data))
    val_set = None
    if not explicit:
        try:
            ann, images = resolve_data(args.data, cfg.data.val_split)
        except MaskkitError as e:
            print(f"maskkit: no validation split, training without evaluation ({e})", file=sys.stderr)
        else:
            val_set = CocoDataset(ann, images)
    return train_set, val_set


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def run_cli(args: argparse.Namespace) -> int:
    from maskkit.engine.distributed import init_distributed
    from maskkit.models.zoo import build_model, get_config

    info = init_distributed(str(resolve_device(args.device)))
    device = resolve_device(args.device)
    try:
        probe = get_config(args.model, None, args.overrides)
        train_set, val_set = load_datasets(args, probe)
        agnostic = probe.model.system == "sharpmask"  # class-agnostic proposals: one "object" class
        cfg = build_config(args.model, None if agnostic else len(train_set.class_names), args.overrides, args.batch,
                           args.iters, args.workers)
        names, cats = (["object"], [1]) if agnostic else (train_set.class_names, train_set.cat_ids)
        out = Path(args.out or Path("runs") / args.model)
        _seed_everything(cfg.train.seed)
        model = build_model(cfg.model)
        if info.main:
            print(f"maskkit: training {args.model} ({cfg.model.num_classes} classes, {len(train_set)} images, "
                  f"global batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, {cfg.train.max_iter} steps, "
                  f"{info.world_size} process(es) on {device}) -> {out}", file=sys.stderr)
        summary = fit(cfg, model, train_set, out, val_set=val_set, device=device, resume=args.resume,
                      class_names=names, cat_ids=cats, progress=not args.no_progress)
    finally:
        if info.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if info.main:
        if summary["last_eval"]:
            from maskkit.engine.evaluate import format_table, write_metrics

            print(format_table(summary["last_eval"]))
            write_metrics(summary["last_eval"], out)
        print(f"maskkit: model files in {out} (model_last.safetensors"
              + (", model_best.safetensors" if summary["best"] else "") + ")")
    return 0

"""Training: ``fit`` = set up + loop over :func:`run_step` + hooks (one process, or many with torchrun).

SGD + momentum + weight decay (AdamW with ``train.optimizer=adamw``), linear warmup then step
or cosine decay (:mod:`maskkit.engine.training.schedule`), gradient clipping and accumulation,
bf16/fp16 autocast, seeded and resumable. The run folder holds ``model_last.safetensors`` /
``model_best.safetensors`` (self-contained model files), ``state_last.pt`` (optimiser,
schedule, step, RNG states), ``metrics.jsonl`` and ``curves.png`` — each written by one hook
(:mod:`maskkit.engine.training.hooks`). What differs between CenterMask and SharpMask (datasets,
batching, stages, scoring) comes from the system object (:mod:`maskkit.engine.systems`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from maskkit.checkpoint import check_compatible, load_state_into, load_train_state, read_model_file
from maskkit.config import ConfigError, validate_config
from maskkit.convert.finetune import load_init_weights
from maskkit.data.coco import CocoDataset, resolve_data
from maskkit.data.loader import to_device
from maskkit.engine.distributed import all_reduce_sum, dist_info, init_distributed, resolve_device
from maskkit.engine.systems import system_of
from maskkit.engine.training.hooks import (
    CheckpointHook,
    CurvesHook,
    EvalHook,
    Hook,
    LossLogHook,
    ProgressHook,
    RunFiles,
    TimeBudgetHook,
    TrainState,
    metric_writers,
)
from maskkit.engine.training.rng import seed_everything, set_rng_state
from maskkit.engine.training.runfolder import RunLock, check_fresh, clean_temporaries, promote, resume_candidates
from maskkit.engine.training.schedule import build_optimizer, build_scheduler, scale_lr
from maskkit.engine.training.signals import StopFlag
from maskkit.errors import CheckpointError, MaskkitError
from maskkit.evaluation import write_metrics
from maskkit.models.zoo import build, get_config, input_convention_of

__all__ = ["TrainingError", "fit", "run_step", "default_hooks", "build_config", "load_datasets", "train"]


class TrainingError(MaskkitError):
    """Training cannot go on (non-finite loss, ...); the message says where and what was kept."""


def autocast(device: torch.device, amp: str):
    """The autocast context of ``train.amp`` (none / bf16 / fp16; fp16 needs CUDA)."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type != "cuda":  # fp16
        raise MaskkitError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 on CPU")
    return torch.autocast("cuda", dtype=torch.float16)


def _load_pair(state: TrainState, model_path: Path, state_path: Path) -> None:
    mf = read_model_file(model_path)
    check_compatible(mf.config, state.cfg, mf.path, "--resume checkpoint")
    saved = load_train_state(state_path)
    if int(saved["step"]) != mf.step:
        raise CheckpointError(
            f"{state_path}: step {saved['step']} does not match "
            f"{mf.path} (step {mf.step}); the run folder is inconsistent"
        )
    load_state_into(state.model, mf.state_dict, mf.path)
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    state.start_step = state.step = int(saved["step"])
    state.best = saved.get("best")


def _resume(state: TrainState) -> None:
    """Load the newest complete checkpoint pair of the run folder into ``state`` (same config):
    the stamped pairs of :mod:`maskkit.engine.training.runfolder` newest first, then ``model_last`` +
    ``state_last``; a pair cut by a crash is skipped. Raises the first pair's error when none loads."""
    files = state.files
    pairs = resume_candidates(files.out, files.model_last, files.state_last)
    if not any(m.exists() for m, _ in pairs):
        raise CheckpointError(
            f"{files.out}: no checkpoint to resume from (no model_last.safetensors); "
            "start the run without --resume (with --overwrite if the folder holds files of it)"
        )
    errors = []
    for model_path, state_path in pairs:
        try:
            _load_pair(state, model_path, state_path)
        except CheckpointError as e:
            if "is for" in str(e):  # another system / class count: no older pair will fit either
                raise
            errors.append(e)
            continue
        if errors and state.info.main:
            print(
                f"maskkit: resuming from {model_path} (step {state.step}); skipped a newer, incomplete "
                f"checkpoint ({errors[0]})",
                file=sys.stderr,
            )
        if model_path != files.model_last and state.info.main:  # a kill before *_last were replaced
            promote(model_path, state_path, files.model_last, files.state_last)
        return
    raise errors[0]


def run_step(net: nn.Module, state: TrainState, stream: Iterator, scaler: torch.amp.GradScaler, stop: StopFlag) -> None:
    """One optimiser step over ``train.accum_steps`` micro-batches; fills ``state.losses``,
    ``state.lr`` and ``state.stopping``. Raises :class:`TrainingError` on a non-finite loss
    (before the weights change)."""
    tc, info, device, optimizer = state.cfg.train, state.info, state.device, state.optimizer
    optimizer.zero_grad(set_to_none=True)
    logged: dict[str, float] = {}
    for micro in range(tc.accum_steps):
        inputs, targets = to_device(next(stream), device)
        last = not info.distributed or micro == tc.accum_steps - 1
        with contextlib.nullcontext() if last else net.no_sync():
            with autocast(device, tc.amp):
                losses = net(inputs, targets)
            keys = sorted(losses)
            loss = sum(losses[k].float() for k in keys)
            # One all-reduce per micro-batch: the loss terms (for logging and the finiteness check,
            # which every rank must agree on) and the stop flag.
            vec = torch.stack(
                [losses[k].detach().float() for k in keys]
                + [torch.tensor(float(stop.signal is not None), device=device)]
            )
            vec = all_reduce_sum(vec.to(device))
            total = float(vec[:-1].sum()) / info.world_size
            if not math.isfinite(total):
                kept = state.files.model_last if state.files.model_last.exists() else None
                raise TrainingError(
                    f"loss became {total} at step {state.step + 1} "
                    f"({', '.join(f'{k}={float(v) / info.world_size:.4g}' for k, v in zip(keys, vec))}); "
                    + (f"last good checkpoint: {kept}" if kept else "no checkpoint was written yet")
                    + " (lower train.lr, raise train.warmup_iters or set train.clip_grad_norm)"
                )
            if float(vec[-1]) > 0 and stop.signal is None:
                stop.signal = signal.SIGTERM  # another rank was signalled
            for k, v in zip(keys, vec[:-1].tolist()):
                logged[k] = logged.get(k, 0.0) + v / info.world_size / tc.accum_steps
            scaler.scale(loss / tc.accum_steps).backward()
    if tc.clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], tc.clip_grad_norm)
    state.lr = optimizer.param_groups[0]["lr"]
    scaler.step(optimizer)
    scaler.update()
    state.scheduler.step()
    state.losses, state.stopping = logged, stop.signal


def default_hooks(progress: bool = True) -> list[Hook]:
    """Time budget, progress bar, loss log, evaluation + best model, checkpoint, curves — in that order."""
    bar = [ProgressHook()] if progress else []
    return [TimeBudgetHook(), *bar, LossLogHook(), EvalHook(), CheckpointHook(), CurvesHook()]


@contextlib.contextmanager
def cpu_threads(device: torch.device, setting: int, workers: int) -> Iterator[None]:
    """``train.cpu_threads`` for the training steps on the CPU (0: unchanged; N: N; -1: torch's
    threads minus the loader's ``workers``, at least 1); torch's count is restored after, so the
    final evaluation has every core again."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu" and setting:
        torch.set_num_threads(setting if setting > 0 else max(1, before - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _loop(state: TrainState, net: nn.Module, stream: Iterator, scaler, hooks: list[Hook]) -> None:
    """Steps + hooks until ``max_iter`` or a stop signal (the checkpoint hook saves at the stop)."""
    with StopFlag() as stop:
        state.signals = stop
        for h in hooks:
            h.before_train(state)
        with cpu_threads(state.device, state.cfg.train.cpu_threads, state.cfg.data.num_workers):
            while not state.finished and state.stopping is None:
                run_step(net, state, stream, scaler, stop)
                state.step += 1
                for h in hooks:
                    h.after_step(state)
        state.interrupted = state.stopping is not None
        for h in hooks:
            h.after_train(state)
        state.interrupted = state.stopping is not None  # also a signal during the final evaluation


def _label_mapping(cfg, model: nn.Module, train_set, class_names, cat_ids) -> tuple[list[str], list]:
    known = getattr(model, "info", None)
    names = list(class_names or (known.class_names if known else []) or getattr(train_set, "class_names", []) or [])
    cats = list(
        cat_ids
        or (known.cat_ids if known and known.class_names else [])
        or getattr(train_set, "cat_ids", [])
        or range(1, len(names) + 1)
    )
    if names and len(names) != int(cfg.model.num_classes):
        raise MaskkitError(f"the dataset has {len(names)} classes but model.num_classes={cfg.model.num_classes}")
    return names, cats


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
    hooks: list[Hook] | None = None,
    overwrite: bool = False,
) -> dict:
    """Train ``model`` for ``cfg.train.max_iter`` optimiser steps; returns a summary dict
    (``step``, ``interrupted``, ``signal``, ``best``, ``last_eval``, paths).

    ``train_set`` yields ``(image [3,H,W], target)``; ``batches(train_set, cfg, rank, world_size, start_step)``
    turns it into an infinite stream of ``(inputs, targets)`` micro-batches (default: the
    system's). The label mapping saved with the model is ``class_names``/``cat_ids``, else
    ``model.info``'s, else the dataset's. Under torchrun the model is wrapped in DDP; only rank 0
    writes files. Raises :class:`TrainingError` on a non-finite loss (files untouched), and
    :class:`~maskkit.engine.training.runfolder.RunFolderError` when ``out_dir`` holds another run (unless
    ``resume`` or ``overwrite``) or a live run holds its lock.
    """
    tc, info, device = cfg.train, dist_info(), torch.device(device)
    autocast(device, tc.amp)  # validates train.amp for this device before any work
    files = RunFiles(Path(out_dir))
    names, cats = _label_mapping(cfg, model, train_set, class_names, cat_ids)
    with contextlib.ExitStack() as guard:
        if info.main:
            files.out.mkdir(parents=True, exist_ok=True)
            guard.enter_context(RunLock(files.out))
            clean_temporaries(files.out)
            if not resume:
                check_fresh(files.out, overwrite)
        return _fit_locked(cfg, model, train_set, files, val_set, device, resume, names, cats, progress, batches, hooks)


def _fit_locked(
    cfg, model, train_set, files: RunFiles, val_set, device, resume, names, cats, progress, batches, hooks
) -> dict:
    tc, info, system = cfg.train, dist_info(), system_of(cfg)
    system.prepare(model, cfg)
    model.to(device).train()
    optimizer = build_optimizer(model, tc)
    state = TrainState(
        cfg,
        model,
        optimizer,
        build_scheduler(optimizer, tc),
        files,
        info,
        device,
        names,
        cats,
        val_set=val_set,
        writers=metric_writers(files, info),
    )
    if resume:
        _resume(state)
    elif tc.init_weights:  # fine-tuning start: fitting tensors loaded, class-specific layers fresh
        reinit = load_init_weights(model, tc.init_weights)
        if info.main:
            print(
                f"maskkit: started from {tc.init_weights}"
                + (f"; re-initialised for {cfg.model.num_classes} classes: {', '.join(reinit)}" if reinit else ""),
                file=sys.stderr,
            )
    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    scaler = torch.amp.GradScaler("cuda", enabled=tc.amp == "fp16" and device.type == "cuda")
    with torch.random.fork_rng(devices=[]):  # DataLoader draws a base seed: keep the step RNG stream intact
        stream = (batches or system.batches)(
            train_set,
            cfg,
            info.rank,
            info.world_size,
            state.start_step,
            pixel_mean=input_convention_of(model, cfg.model).pixel_mean,
        )
    hooks = default_hooks(progress) if hooks is None else hooks
    try:
        _loop(state, net, stream, scaler, hooks)
    finally:
        for h in hooks:
            h.close()
        for w in state.writers:
            w.close()
    return {
        "step": state.step,
        "interrupted": state.interrupted,
        "signal": state.stopping,
        "best": state.best,
        "last_eval": state.last_eval,
        **{
            k: str(getattr(files, k))
            for k in ("model_last", "model_best", "state_last", "metrics", "curves", "results")
        },
    }


# --------------------------------------------------------------------------- from a dataset on disk


def build_config(
    model: str,
    num_classes: int | None,
    overrides: list[str],
    batch: int | None = None,
    iters: int | None = None,
    workers: int | None = None,
):
    """Preset + overrides, with ``batch`` applying the linear scaling rule to ``train.lr``
    (unless ``train.lr`` is overridden)."""
    for flag, value, low in (("--batch", batch, 1), ("--iters", iters, 1), ("--workers", workers, 0)):
        if value is not None and value < low:
            raise MaskkitError(f"{flag} must be >= {low}, got {value}")
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
    validate_config(cfg)
    if cfg.train.max_iter < 1:  # a run of 0 steps would end claiming a model file it never wrote
        raise ConfigError(f"train.max_iter must be >= 1 (--iters) to train, got {cfg.train.max_iter}")
    return cfg


def load_datasets(
    cfg, data: str | Path | None = None, ann: str | Path | None = None, images: str | Path | None = None
) -> tuple[Any, Any]:
    """(training set as the config's system trains on it, validation set without transforms or
    None) for ``cfg.data``.

    ``data`` (a COCO-style root) gives both splits (``cfg.data.train_split`` / ``val_split``);
    ``ann`` + ``images`` give the training set only (no periodic evaluation)."""
    explicit = ann is not None or images is not None
    train_set = system_of(cfg).training_set(*resolve_data(data, cfg.data.train_split, ann, images), cfg)
    val_set = None
    if not explicit:
        try:
            val_set = CocoDataset(*resolve_data(data, cfg.data.val_split))
        except MaskkitError as e:
            print(f"maskkit: no validation split, training without evaluation ({e})", file=sys.stderr)
    return train_set, val_set


def train(
    model: str,
    *,
    data: str | Path | None = None,
    ann: str | Path | None = None,
    images: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    device: str | None = "auto",
    overrides: list[str] = (),
    batch: int | None = None,
    iters: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """``maskkit train``: preset ``model`` on a dataset on disk, into the run folder ``out``
    (default ``runs/<model>``); the summary of :func:`fit` plus ``out``. Under torchrun it joins
    the process group first. Writes ``metrics.json`` of the final evaluation (rank 0)."""
    overrides = list(overrides)
    info = init_distributed(str(resolve_device(device)))
    device = resolve_device(device)
    try:
        probe = get_config(model, None, overrides)
        train_set, val_set = load_datasets(probe, data, ann, images)
        system = system_of(probe)
        cfg = build_config(model, system.num_classes(train_set), overrides, batch, iters, workers)
        names, cats = system.label_mapping(train_set)
        out = Path(out or Path("runs") / model)
        seed_everything(cfg.train.seed)
        net = build(cfg, names, cats, backbone_weights=not resume)  # a resumed run reads its own files
        if info.main:
            print(
                f"maskkit: training {model} ({cfg.model.num_classes} classes, {len(train_set)} images, "
                f"global batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, {cfg.train.max_iter} steps, "
                f"{info.world_size} process(es) on {device}) -> {out}",
                file=sys.stderr,
            )
        summary = fit(
            cfg,
            net,
            train_set,
            out,
            val_set=val_set,
            device=device,
            resume=resume,
            progress=progress,
            overwrite=overwrite,
        )
    finally:
        if info.distributed:
            torch.distributed.destroy_process_group()
    if info.main and summary["last_eval"]:
        write_metrics(summary["last_eval"], out)
    return {**summary, "out": str(out), "main": info.main}

"""Training: :func:`fit` = set up + loop over :func:`run_step` + hooks (one process, or many
with torchrun).

SGD + momentum + weight decay (AdamW with ``train.optimizer=adamw``), linear warmup then step
or cosine decay (:mod:`maskkit.engine.training.schedule`), gradient clipping and accumulation,
bf16/fp16 autocast, seeded and resumable. The run folder holds ``model_last.safetensors`` /
``model_best.safetensors`` (self-contained model files), ``state_last.pt`` (optimiser,
schedule, step, RNG states), ``metrics.jsonl`` and ``curves.png`` — each written by one hook
(:mod:`maskkit.engine.training.hooks`). What differs between CenterMask and SharpMask (datasets,
batching, stages, scoring) comes from the system record (:mod:`maskkit.engine.systems`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from maskkit.convert.finetune import load_init_weights
from maskkit.data.loader import to_device
from maskkit.engine.distributed import DistInfo, all_reduce_sum, dist_info
from maskkit.engine.systems import system_of
from maskkit.engine.training.hooks import Hook, default_hooks
from maskkit.engine.training.resume import resume as resume_run
from maskkit.engine.training.runfolder import RunFiles, RunLock, check_fresh, clean_temporaries
from maskkit.engine.training.schedule import build_optimizer, build_scheduler
from maskkit.engine.training.signals import StopFlag
from maskkit.engine.training.state import LoopState, TrainSetup
from maskkit.engine.training.writers import metric_writers
from maskkit.errors import MaskkitError
from maskkit.models.zoo import input_convention_of

__all__ = ["TrainingError", "fit", "run_step", "forward_backward", "reduce_and_check", "optimizer_step"]


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


# --------------------------------------------------------------------------- one step


def forward_backward(
    net: nn.Module, batch, device: torch.device, amp: str, scaler: torch.amp.GradScaler, scale: float, sync: bool
) -> dict[str, torch.Tensor]:
    """One micro-batch: forward under ``amp``, the summed loss scaled by ``scale`` (1 / the
    accumulation steps) backward (``sync=False``: DDP keeps the gradients local, as every
    micro-batch but the step's last) -> the loss terms, detached."""
    inputs, targets = to_device(batch, device)
    with contextlib.nullcontext() if sync else net.no_sync():
        with autocast(device, amp):
            losses = net(inputs, targets)
        loss = sum(losses[k].float() for k in sorted(losses))
        scaler.scale(loss * scale).backward()
    return {k: v.detach().float() for k, v in losses.items()}


def reduce_and_check(
    terms: dict[str, torch.Tensor], stop: StopFlag, info: DistInfo, device: torch.device, step: int, kept: Path | None
) -> dict[str, float]:
    """The loss terms averaged over processes — one all-reduce per micro-batch that also carries
    the stop flag, so every rank agrees on a non-finite loss and on a signal any rank received
    (``stop.signal`` is then set here too). Raises :class:`TrainingError` on a non-finite loss
    (before the optimiser changes any weight; ``kept`` names the last good checkpoint)."""
    keys = sorted(terms)
    vec = torch.stack([terms[k] for k in keys] + [torch.tensor(float(stop.signal is not None), device=device)])
    vec = all_reduce_sum(vec.to(device))
    total = float(vec[:-1].sum()) / info.world_size
    if not math.isfinite(total):
        raise TrainingError(
            f"loss became {total} at step {step} "
            f"({', '.join(f'{k}={float(v) / info.world_size:.4g}' for k, v in zip(keys, vec))}); "
            + (f"last good checkpoint: {kept}" if kept else "no checkpoint was written yet")
            + " (lower train.lr, raise train.warmup_iters or set train.clip_grad_norm)"
        )
    if float(vec[-1]) > 0 and stop.signal is None:
        stop.signal = signal.SIGTERM  # another rank was signalled
    return {k: v / info.world_size for k, v in zip(keys, vec[:-1].tolist())}


def optimizer_step(optimizer, scheduler, scaler: torch.amp.GradScaler, clip_grad_norm: float) -> float:
    """Clip (``clip_grad_norm > 0``), step the optimiser and the schedule; -> the lr of the step."""
    if clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip_grad_norm)
    lr = optimizer.param_groups[0]["lr"]
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return lr


def run_step(net: nn.Module, setup: TrainSetup, state: LoopState, stream: Iterator, scaler, stop: StopFlag) -> None:
    """One optimiser step over ``train.accum_steps`` micro-batches: forward-backward and
    reduce-and-check each, then the optimiser step; fills ``state.losses``, ``state.lr`` and
    ``state.stopping``."""
    tc, info = setup.cfg.train, setup.info
    setup.optimizer.zero_grad(set_to_none=True)
    logged: dict[str, float] = {}
    kept = setup.files.model_last if setup.files.model_last.exists() else None
    for micro in range(tc.accum_steps):
        last = not info.distributed or micro == tc.accum_steps - 1
        terms = forward_backward(net, next(stream), setup.device, tc.amp, scaler, 1.0 / tc.accum_steps, last)
        for k, v in reduce_and_check(terms, stop, info, setup.device, state.step + 1, kept).items():
            logged[k] = logged.get(k, 0.0) + v / tc.accum_steps
    state.lr = optimizer_step(setup.optimizer, setup.scheduler, scaler, tc.clip_grad_norm)
    state.losses, state.stopping = logged, stop.signal


# --------------------------------------------------------------------------- the loop


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


def _loop(setup: TrainSetup, state: LoopState, net: nn.Module, stream: Iterator, scaler, hooks: list[Hook]) -> None:
    """Steps + hooks until the run's length or a stop signal (the checkpoint hook saves at the stop)."""
    with StopFlag() as stop:
        state.stop = stop
        for h in hooks:
            h.before_train(state)
        with cpu_threads(setup.device, setup.cfg.train.cpu_threads, setup.cfg.data.num_workers):
            while not state.finished and state.stopping is None:
                run_step(net, setup, state, stream, scaler, stop)
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

    ``train_set`` yields ``(image [3,H,W], target)``; ``batches(train_set, cfg, rank, world_size,
    start_step, pixel_mean=...)`` turns it into an infinite stream of ``(inputs, targets)``
    micro-batches (default: the system's). The label mapping saved with the model is
    ``class_names``/``cat_ids``, else ``model.info``'s, else the dataset's. ``hooks`` replaces
    :func:`~maskkit.engine.training.hooks.default_hooks`. Under torchrun the model is wrapped in
    DDP; only rank 0 writes files. Raises :class:`TrainingError` on a non-finite loss (files
    untouched), and :class:`~maskkit.engine.training.runfolder.RunFolderError` when ``out_dir``
    holds another run (unless ``resume`` or ``overwrite``) or a live run holds its lock.
    """
    info, device = dist_info(), torch.device(device)
    autocast(device, cfg.train.amp)  # validates train.amp for this device before any work
    files = RunFiles(Path(out_dir))
    names, cats = _label_mapping(cfg, model, train_set, class_names, cat_ids)
    with contextlib.ExitStack() as guard:
        if info.main:
            files.out.mkdir(parents=True, exist_ok=True)
            guard.enter_context(RunLock(files.out))
            clean_temporaries(files.out)
            if not resume:
                check_fresh(files.out, overwrite)
        system = system_of(cfg)
        system.prepare(model, cfg)
        model.to(device).train()
        optimizer = build_optimizer(model, cfg.train)
        state = LoopState(max_iter=cfg.train.max_iter)
        scheduler = build_scheduler(optimizer, cfg.train, lambda: state.max_iter)
        setup = TrainSetup(
            cfg,
            model,
            optimizer,
            scheduler,
            files,
            info,
            device,
            names,
            cats,
            val_set,
            metric_writers(files, info.main),
        )
        return _run(setup, state, train_set, resume, batches or system.batches, hooks, progress)


def _run(setup: TrainSetup, state: LoopState, train_set, resume: bool, batches: Callable, hooks, progress) -> dict:
    cfg, model, info, device = setup.cfg, setup.model, setup.info, setup.device
    if resume:
        resume_run(setup, state)
    elif cfg.train.init_weights:  # fine-tuning start: fitting tensors loaded, class-specific layers fresh
        reinit = load_init_weights(model, cfg.train.init_weights)
        if info.main:
            print(
                f"maskkit: started from {cfg.train.init_weights}"
                + (f"; re-initialised for {cfg.model.num_classes} classes: {', '.join(reinit)}" if reinit else ""),
                file=sys.stderr,
            )
    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp == "fp16" and device.type == "cuda")
    with torch.random.fork_rng(devices=[]):  # DataLoader draws a base seed: keep the step RNG stream intact
        fill = input_convention_of(model, cfg.model).pixel_mean  # windows past the image (SharpMask)
        stream = batches(train_set, cfg, info.rank, info.world_size, state.start_step, pixel_mean=fill)
    hooks = default_hooks(setup, progress) if hooks is None else hooks
    try:
        _loop(setup, state, net, stream, scaler, hooks)
    finally:
        for h in hooks:
            h.close()
        for w in setup.writers:
            w.close()
    files = setup.files
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

"""Optimiser and learning-rate schedule shared by both systems.

Both papers train with SGD + momentum + weight decay (CenterMask: REFERENCE "Training and
test defaults", lr 0.01 for batch 16, linear warmup 1000 iters from factor 0.001, x0.1 at
fixed steps; DeepMask/SharpMask: lr 1e-3, momentum 0.9, wd 5e-4, batch 32, step decay).
The schedule is torch's ``LambdaLR`` with one factor function: linear warmup, then step
decay or a cosine to zero.

Linear scaling rule (Goyal et al., as the CenterMask code applies it): when the global batch
changes from the preset's ``base_batch`` to ``batch``, ``lr`` becomes
``lr * batch / base_batch`` (and warmup/steps stay in iterations).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from maskkit.errors import MaskkitError

__all__ = ["scale_lr", "lr_factor", "build_optimizer", "build_scheduler"]


def scale_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """Linear scaling rule: ``base_lr * batch / base_batch``."""
    return float(base_lr) * float(batch) / float(base_batch)


def lr_factor(step: int, tc, max_iter: int | None = None) -> float:
    """Multiplier of ``tc.lr`` at optimiser step ``step`` (0-based) for TrainConfig ``tc``; the
    cosine anneals over ``max_iter`` steps (default ``tc.max_iter``; a time budget makes the
    run's length a property of the run, not of its config)."""
    max_iter = tc.max_iter if max_iter is None else max_iter
    warm = 1.0
    if tc.warmup_iters > 0 and step < tc.warmup_iters:
        alpha = step / tc.warmup_iters
        warm = tc.warmup_factor * (1 - alpha) + alpha  # linear from warmup_factor to 1
    if tc.schedule == "cosine":
        t = min(step, max_iter) / max(1, max_iter)
        decay = 0.5 * (1 + math.cos(math.pi * t))
    else:  # "step" (the choices are checked when the config is built)
        decay = tc.gamma ** sum(1 for s in tc.steps if step >= s)
    return warm * decay


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)


def _param_groups(model: nn.Module, params: list[nn.Parameter], tc) -> list[dict]:
    """Weight-decay groups. ``train.no_decay="1d"`` (maskkit's default): no decay on any 1-D
    tensor (norm parameters, biases, FCOS scales). ``"norm"`` (detectron2 / centermask2:
    ``WEIGHT_DECAY_NORM = 0``, biases decay like weights): no decay on norm layers only."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for p in params:
        if not p.requires_grad:
            continue
        exempt = id(p) in norm_ids if tc.no_decay == "norm" else p.ndim <= 1
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": tc.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, tc) -> torch.optim.Optimizer:
    """SGD with momentum (or AdamW, ``train.optimizer=adamw``) over the trainable parameters of
    ``model`` (``model.trainable_parameters()`` when it defines it, e.g. SharpMask stage 2
    trains only the refinement)."""
    target = getattr(model, "module", model)
    params = list(target.trainable_parameters() if hasattr(target, "trainable_parameters") else target.parameters())
    groups = _param_groups(target, params, tc)
    if not any(g["params"] for g in groups):
        raise MaskkitError("the model has no trainable parameters")
    # Multi-tensor updates: on the CPU torch's default is a Python loop over the tensors, a few %
    # of a demo step (benchmarks/demo_training_cost.md); fused AdamW, foreach SGD (fused SGD fails
    # in torch 2.14 when a parameter gets its first gradient after the first step, as SharpMask's
    # score-only batches do). Same update up to float rounding.
    fast = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    if tc.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=tc.lr, **({"fused": True} if fast else {}))
    return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, foreach=True if fast else None)


def build_scheduler(
    optimizer: torch.optim.Optimizer, tc, max_iter: Callable[[], int] | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :func:`lr_factor`; call ``.step()`` once per optimiser step. ``max_iter()``
    gives the run's current length at each step (the loop's, which a time budget may change)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, tc, max_iter() if max_iter is not None else None)
    )

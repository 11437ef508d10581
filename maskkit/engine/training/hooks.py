"""Training hooks: everything the loop does besides optimising, one concern per hook
(detectron2's ``HookBase`` idea without its trainer hierarchy). Each hook sees the shared
:class:`TrainState` at ``before_train`` / ``after_step`` / ``after_train`` and releases its
resources in ``close`` (called even when training fails). Adding a metrics writer or changing
how the best model is chosen touches one hook.

Order (see :func:`maskkit.engine.training.loop.default_hooks`): time budget (it may shorten the run,
so it goes first), progress bar, loss log, evaluation (+ best model), checkpoint, curves.
Records (losses, evaluation figures) go to every metrics writer of the run
(:class:`JsonlWriter` for ``metrics.jsonl``, :class:`TensorboardWriter`).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskkit import metrics_log
from maskkit.checkpoint import save_model, save_train_state
from maskkit.engine.distributed import DistInfo, barrier
from maskkit.engine.inference.evaluate import evaluate_model
from maskkit.engine.training.rng import rng_state
from maskkit.engine.training.runfolder import save_pair, truncate_metrics
from maskkit.engine.training.signals import StopFlag, StopRequested
from maskkit.errors import MaskkitError
from maskkit.evaluation import primary_metric
from maskkit.viz import plot_metrics

__all__ = [
    "RunFiles",
    "TrainState",
    "Hook",
    "ProgressHook",
    "LossLogHook",
    "EvalHook",
    "CheckpointHook",
    "CurvesHook",
    "JsonlWriter",
    "TensorboardWriter",
    "metric_writers",
]


@dataclass(frozen=True)
class RunFiles:
    """The files of a run folder."""

    out: Path

    @property
    def model_last(self) -> Path:
        return self.out / "model_last.safetensors"

    @property
    def model_best(self) -> Path:
        return self.out / "model_best.safetensors"

    @property
    def state_last(self) -> Path:
        return self.out / "state_last.pt"

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.out / "curves.png"

    @property
    def results(self) -> Path:
        return self.out / "results.json"


@dataclass
class TrainState:
    """What the loop and its hooks share. ``losses`` are the last step's loss terms (averaged
    over processes and accumulation steps); ``stopping`` is set by a stop signal."""

    cfg: Any
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    files: RunFiles
    info: DistInfo
    device: torch.device
    class_names: list[str]
    cat_ids: list[int]
    val_set: Any = None
    start_step: int = 0
    step: int = 0
    best: dict | None = None
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    last_eval: dict | None = None
    stopping: int | None = None  # the signal number
    interrupted: bool = False
    writers: list = field(default_factory=list)  # metrics writers (rank 0 only)
    signals: StopFlag | None = None  # the loop's stop flag (None outside fit)

    def write(self, record: dict) -> None:
        """Send a record (``step`` + named floats) to every metrics writer."""
        for w in self.writers:
            w.write(record)

    @property
    def finished(self) -> bool:
        return self.step >= self.cfg.train.max_iter

    def is_checkpoint_step(self) -> bool:
        """Steps at which ``model_last`` + ``state_last`` are written."""
        tc = self.cfg.train
        return self.stopping is not None or self.step % max(1, tc.checkpoint_period) == 0 or self.finished


class Hook:
    """No-op base: override what you need."""

    def before_train(self, state: TrainState) -> None: ...

    def after_step(self, state: TrainState) -> None: ...

    def after_train(self, state: TrainState) -> None: ...

    def close(self) -> None: ...


class ProgressHook(Hook):
    """A tqdm bar with the loss and learning rate (rank 0)."""

    def __init__(self):
        self.bar = None

    def before_train(self, state: TrainState) -> None:
        if state.info.main:
            self.bar = tqdm(
                total=state.cfg.train.max_iter, initial=state.start_step, desc="train", unit="it", dynamic_ncols=True
            )

    def after_step(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.total = state.cfg.train.max_iter  # a time budget may shorten the run
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{sum(state.losses.values()):.3f}", lr=f"{state.lr:.2e}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TimeBudgetHook(Hook):
    """``train.time_budget_min``: every ``every`` steps after the warm-up, the time per step of
    the last ``window`` checks (or since the start, before that) predicts how many steps fit in
    what is left of the budget; ``max_iter`` becomes that, never more than the configured length,
    so the loop ends in time and the schedule, which reads ``max_iter`` at each step, anneals over
    the run's length as it is now known (a cosine re-scaled from the current step: small jumps).
    The recent rate, not the mean since the start, so a slow start (a cold image cache, loader
    workers starting) does not cut the run for good. The step count then depends on the
    machine's speed: the run is not reproducible across machines (the demo uses it; plain
    training leaves it off)."""

    def __init__(self, clock=time.monotonic, every: int = 25, window: int = 4):
        self.clock, self.every = clock, every
        self.marks: deque[tuple[int, float]] = deque(maxlen=window + 1)
        self.t0 = self.first = self.limit = self.told = None

    def before_train(self, state: TrainState) -> None:
        tc = state.cfg.train
        if tc.time_budget_min and state.info.world_size > 1:
            raise MaskkitError("train.time_budget_min needs one process: the processes would stop apart")
        self.t0, self.first = self.clock(), state.step
        self.limit = self.told = tc.max_iter  # the configured length: a budget never lengthens it
        self.marks.clear()
        self.marks.append((state.step, self.t0))

    def after_step(self, state: TrainState) -> None:
        tc = state.cfg.train
        done = state.step - self.first
        if not tc.time_budget_min or done < max(self.every, tc.warmup_iters) or state.step % self.every:
            return
        now = self.clock()
        self.marks.append((state.step, now))
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        per_step = (t1 - t0) / (s1 - s0)
        left = tc.time_budget_min * 60 - (now - self.t0)
        fit = min(self.limit, state.step + max(0, int(left / per_step)))
        if state.info.main and fit < self.limit and abs(fit - self.told) > max(self.every, 0.05 * self.told):
            print(
                f"maskkit: time budget {tc.time_budget_min:g} min: training {fit} steps "
                f"instead of {self.limit} ({per_step:.2f} s per step)",
                file=sys.stderr,
            )
            self.told = fit
        tc.max_iter = fit


class LossLogHook(Hook):
    """Every ``log_period`` steps: the mean loss over those steps, each term of the last step,
    lr and time, to the metrics writers. A resumed run first cuts ``metrics.jsonl`` back to the
    resumed step (a killed run may have logged past its last checkpoint)."""

    def __init__(self):
        self.window: list[float] = []
        self.t0 = time.time()

    def before_train(self, state: TrainState) -> None:
        self.t0 = time.time()
        if state.info.main and state.start_step == 0 and state.files.metrics.exists():
            state.files.metrics.unlink()
        elif state.info.main:
            truncate_metrics(state.files.metrics, state.start_step)

    def after_step(self, state: TrainState) -> None:
        self.window.append(sum(state.losses.values()))
        if state.step % max(1, state.cfg.train.log_period) == 0 or state.finished:
            state.write(
                {
                    "step": state.step,
                    "lr": state.lr,
                    metrics_log.LOSS: float(np.mean(self.window)),
                    **{f"{metrics_log.LOSS}/{k}": v for k, v in state.losses.items()},
                    "time": round(time.time() - self.t0, 2),
                }
            )
            self.window = []


class EvalHook(Hook):
    """Evaluate on the validation set every ``eval_period`` steps and at the end; keep the best
    model (by :func:`maskkit.evaluation.primary_metric`) as ``model_best``."""

    def after_step(self, state: TrainState) -> None:
        period = state.cfg.train.eval_period
        if state.stopping is None and period > 0 and state.step % period == 0 and not state.finished:
            self.evaluate(state)

    def after_train(self, state: TrainState) -> None:
        if not state.interrupted:
            self.evaluate(state)

    def evaluate(self, state: TrainState) -> None:
        """One evaluation. In a single process a stop signal interrupts it at once (the loop then
        saves and stops); with several processes the signal is honoured at the next step, since
        all ranks must leave the evaluation's collectives together."""
        if state.val_set is None:
            return
        try:
            if state.signals is not None and not state.info.distributed:
                with state.signals.interruptible():
                    self._evaluate(state)
            else:
                self._evaluate(state)
        except StopRequested as stop:
            state.model.train()
            state.stopping = stop.signum
            if state.info.main:
                print(
                    f"\nmaskkit: evaluation at step {state.step} interrupted by signal {stop.signum}", file=sys.stderr
                )

    def _evaluate(self, state: TrainState) -> None:
        metrics = evaluate_model(
            state.model,
            state.val_set,
            cfg=state.cfg,
            device=state.device,
            label_to_cat_id=dict(enumerate(state.cat_ids, 1)),
            progress=False,
            results_path=state.files.results if state.info.main else None,
        )
        state.model.train()
        state.last_eval = metrics
        if not state.info.main:
            return
        state.write(
            {
                "step": state.step,
                **{f"{metrics_log.EVAL_PREFIX}{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
        key, value = primary_metric(metrics)
        if state.best is None or value > state.best["value"]:
            state.best = {"key": key, "value": float(value), "step": state.step}
            save_model(state.files.model_best, state.model, state.cfg, state.class_names, state.cat_ids, state.step)


class CheckpointHook(Hook):
    """``model_last`` + ``state_last`` (optimiser, schedule, step, RNG, best) every
    ``checkpoint_period`` steps, at the end and when stopped by a signal (rank 0 writes)."""

    def after_step(self, state: TrainState) -> None:
        if state.is_checkpoint_step():
            self.save(state)

    @staticmethod
    def save(state: TrainState) -> None:
        """A consistent model/state pair whatever the moment of a crash (:func:`save_pair`)."""
        if state.info.main:
            train_state = {
                "step": state.step,
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "rng": rng_state(),
                "best": state.best,
            }
            files = state.files
            save_pair(
                files.out,
                state.step,
                lambda p: save_model(p, state.model, state.cfg, state.class_names, state.cat_ids, state.step),
                lambda p: save_train_state(p, train_state),
                files.model_last,
                files.state_last,
            )
        barrier()


class CurvesHook(Hook):
    """``curves.png`` (losses, lr, AP/AR) at each checkpoint while training and at the end."""

    def after_step(self, state: TrainState) -> None:
        if state.is_checkpoint_step() and not state.finished:
            self.draw(state)

    def after_train(self, state: TrainState) -> None:
        self.draw(state)

    @staticmethod
    def draw(state: TrainState) -> None:
        if state.info.main and state.files.metrics.exists():
            plot_metrics(state.files.metrics, state.files.curves)


# --------------------------------------------------------------------------- metrics writers


class JsonlWriter:
    """``metrics.jsonl`` (:mod:`maskkit.metrics_log`): losses and lr as logged; of the
    evaluation figures only the headline ones (AP, AP50, AP75, AR@k) — the full table is in
    ``metrics.json`` and ``results.json``."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        keep = {
            k: v
            for k, v in record.items()
            if not k.startswith(metrics_log.EVAL_PREFIX)
            or k.rpartition("/")[2] in ("AP", "AP50", "AP75")
            or "/AR@" in k
        }
        metrics_log.append_record(self.path, keep)

    def close(self) -> None: ...


class TensorboardWriter:
    """``<run>/tensorboard``: every number of every record as a scalar (optional extra)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(folder))

    def write(self, record: dict) -> None:
        for k, v in record.items():
            if k not in ("step", "time") and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.tb.close()


def metric_writers(files: RunFiles, info: DistInfo) -> list:
    """The run's writers: ``metrics.jsonl`` always, TensorBoard when installed (rank 0 only)."""
    if not info.main:
        return []
    writers: list = [JsonlWriter(files.metrics)]
    try:
        writers.append(TensorboardWriter(files.out / "tensorboard"))
    except ImportError:  # tensorboard is an optional extra
        pass
    return writers

"""Training hooks: everything the loop does besides optimising, one concern per hook
(detectron2's ``HookBase`` idea without its trainer hierarchy). Each hook is configured through
its constructor (periods, what to call) and sees only the loop's :class:`LoopState` at
``before_train`` / ``after_step`` / ``after_train``; it releases its resources in ``close``
(called even when training fails). :func:`default_hooks` builds the standard set for a run.

Order: time budget (it may shorten the run, so it goes first), progress bar, loss log,
evaluation (+ best model), checkpoint, curves. Adding a hook: a class with these methods,
added to the list :func:`default_hooks` returns (or passed as ``fit(..., hooks=[...])``).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Callable

import numpy as np
from tqdm import tqdm

from maskkit import metrics_log
from maskkit.checkpoint import save_model, save_train_state
from maskkit.engine.distributed import barrier
from maskkit.engine.inference.evaluate import evaluate_model
from maskkit.engine.training.rng import rng_state
from maskkit.engine.training.runfolder import save_pair, truncate_metrics
from maskkit.engine.training.signals import StopRequested
from maskkit.engine.training.state import LoopState, TrainSetup
from maskkit.errors import MaskkitError
from maskkit.evaluation import primary_metric
from maskkit.viz import plot_metrics

__all__ = [
    "Hook",
    "TimeBudgetHook",
    "ProgressHook",
    "LossLogHook",
    "EvalHook",
    "CheckpointHook",
    "CurvesHook",
    "checkpoint_due",
    "default_hooks",
]


class Hook:
    """No-op base: override what you need."""

    def before_train(self, state: LoopState) -> None: ...

    def after_step(self, state: LoopState) -> None: ...

    def after_train(self, state: LoopState) -> None: ...

    def close(self) -> None: ...


def checkpoint_due(state: LoopState, period: int) -> bool:
    """Steps at which ``model_last`` + ``state_last`` are written: every ``period`` steps, at the
    end, and when a stop signal arrived."""
    return state.stopping is not None or state.step % max(1, period) == 0 or state.finished


class ProgressHook(Hook):
    """A tqdm bar with the loss and learning rate."""

    def __init__(self):
        self.bar = None

    def before_train(self, state: LoopState) -> None:
        self.bar = tqdm(total=state.max_iter, initial=state.start_step, desc="train", unit="it", dynamic_ncols=True)

    def after_step(self, state: LoopState) -> None:
        self.bar.total = state.max_iter  # a time budget may shorten the run
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{sum(state.losses.values()):.3f}", lr=f"{state.lr:.2e}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TimeBudgetHook(Hook):
    """``train.time_budget_min``: every ``every`` steps after the warm-up, the time per step of
    the last ``window`` checks (or since the start, before that) predicts how many steps fit in
    what is left of the budget; the run's length (``state.max_iter``) becomes that, never more
    than its configured length, so the loop ends in time and the schedule, which reads the
    length at each step, anneals over the run as it is now known (a cosine re-scaled from the
    current step: small jumps). The recent rate, not the mean since the start, so a slow start
    (a cold image cache, loader workers starting) does not cut the run for good. The step count
    then depends on the machine's speed: the run is not reproducible across machines (the demo
    uses it; plain training leaves it off)."""

    def __init__(
        self,
        budget_min: float,
        warmup_iters: int = 0,
        world_size: int = 1,
        verbose: bool = True,
        clock: Callable[[], float] = time.monotonic,
        every: int = 25,
        window: int = 4,
    ):
        if budget_min and world_size > 1:
            raise MaskkitError("train.time_budget_min needs one process: the processes would stop apart")
        self.budget_s, self.warmup, self.verbose = budget_min * 60, warmup_iters, verbose
        self.clock, self.every = clock, every
        self.marks: deque[tuple[int, float]] = deque(maxlen=window + 1)
        self.t0 = self.first = self.limit = self.told = None

    def before_train(self, state: LoopState) -> None:
        self.t0, self.first = self.clock(), state.step
        self.limit = self.told = state.max_iter  # the configured length: a budget never lengthens it
        self.marks.clear()
        self.marks.append((state.step, self.t0))

    def after_step(self, state: LoopState) -> None:
        done = state.step - self.first
        if not self.budget_s or done < max(self.every, self.warmup) or state.step % self.every:
            return
        now = self.clock()
        self.marks.append((state.step, now))
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        per_step = (t1 - t0) / (s1 - s0)
        left = self.budget_s - (now - self.t0)
        fit = min(self.limit, state.step + max(0, int(left / per_step)))
        if self.verbose and fit < self.limit and abs(fit - self.told) > max(self.every, 0.05 * self.told):
            print(
                f"maskkit: time budget {self.budget_s / 60:g} min: training {fit} steps "
                f"instead of {self.limit} ({per_step:.2f} s per step)",
                file=sys.stderr,
            )
            self.told = fit
        state.max_iter = fit


class LossLogHook(Hook):
    """Every ``period`` steps: the mean loss over those steps, each term of the last step, lr and
    time, as one record to ``write``. A resumed run first cuts ``metrics`` (the run's
    ``metrics.jsonl``) back to the resumed step (a killed run may have logged past its last
    checkpoint); a fresh one removes it."""

    def __init__(self, period: int, write: Callable[[dict], None], metrics=None):
        self.period, self.write, self.metrics = max(1, period), write, metrics
        self.window: list[float] = []
        self.t0 = time.time()

    def before_train(self, state: LoopState) -> None:
        self.t0 = time.time()
        if self.metrics is not None and state.start_step == 0 and self.metrics.exists():
            self.metrics.unlink()
        elif self.metrics is not None:
            truncate_metrics(self.metrics, state.start_step)

    def after_step(self, state: LoopState) -> None:
        self.window.append(sum(state.losses.values()))
        if state.step % self.period == 0 or state.finished:
            self.write(
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
    """``evaluate()`` every ``period`` steps (0: only at the end) and at the end of a run that was
    not interrupted; ``record(state, metrics)`` keeps the result (metrics writers, best model).
    ``interruptible``: a stop signal interrupts an evaluation at once (one process; with several
    the signal is honoured at the next step, since all ranks must leave the evaluation's
    collectives together). ``evaluate`` leaves the model in train mode, also when interrupted."""

    def __init__(
        self,
        period: int,
        evaluate: Callable[[], dict],
        record: Callable[[LoopState, dict], None],
        interruptible: bool = True,
        verbose: bool = True,
    ):
        self.period, self.evaluate_fn, self.record = period, evaluate, record
        self.interruptible, self.verbose = interruptible, verbose

    def after_step(self, state: LoopState) -> None:
        if state.stopping is None and self.period > 0 and state.step % self.period == 0 and not state.finished:
            self.evaluate(state)

    def after_train(self, state: LoopState) -> None:
        if not state.interrupted:
            self.evaluate(state)

    def evaluate(self, state: LoopState) -> None:
        """One evaluation; a stop signal during it sets ``state.stopping`` (the loop then saves and stops)."""
        try:
            if state.stop is not None and self.interruptible:
                with state.stop.interruptible():
                    metrics = self.evaluate_fn()
            else:
                metrics = self.evaluate_fn()
        except StopRequested as stop:
            state.stopping = stop.signum
            if self.verbose:
                print(
                    f"\nmaskkit: evaluation at step {state.step} interrupted by signal {stop.signum}", file=sys.stderr
                )
            return
        self.record(state, metrics)


class CheckpointHook(Hook):
    """``save(state)`` every ``period`` steps, at the end and when stopped by a signal."""

    def __init__(self, period: int, save: Callable[[LoopState], None]):
        self.period, self.save = period, save

    def after_step(self, state: LoopState) -> None:
        if checkpoint_due(state, self.period):
            self.save(state)


class CurvesHook(Hook):
    """``draw()`` (the run's ``curves.png``: losses, lr, AP/AR) at each checkpoint while training
    and at the end."""

    def __init__(self, period: int, draw: Callable[[], None]):
        self.period, self.draw = period, draw

    def after_step(self, state: LoopState) -> None:
        if checkpoint_due(state, self.period) and not state.finished:
            self.draw()

    def after_train(self, state: LoopState) -> None:
        self.draw()


# --------------------------------------------------------------------------- the standard set


def _evaluation(setup: TrainSetup) -> tuple[Callable[[], dict], Callable[[LoopState, dict], None]]:
    """(evaluate, record) of :class:`EvalHook` for ``setup``: the validation set through the one
    inference path; every rank keeps the metrics, rank 0 writes them and keeps the best model (by
    :func:`maskkit.evaluation.primary_metric`) as ``model_best``."""
    cfg, files, main = setup.cfg, setup.files, setup.info.main

    def evaluate() -> dict:
        try:
            return evaluate_model(
                setup.model,
                setup.val_set,
                cfg=cfg,
                device=setup.device,
                label_to_cat_id=dict(enumerate(setup.cat_ids, 1)),
                progress=False,
                results_path=files.results if main else None,
            )
        finally:
            setup.model.train()

    def record(state: LoopState, metrics: dict) -> None:
        state.last_eval = metrics
        if not main:
            return
        setup.write(
            {
                "step": state.step,
                **{f"{metrics_log.EVAL_PREFIX}{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
        key, value = primary_metric(metrics)
        if state.best is None or value > state.best["value"]:
            state.best = {"key": key, "value": float(value), "step": state.step}
            save_model(files.model_best, setup.model, cfg, setup.class_names, setup.cat_ids, state.step)

    return evaluate, record


def _checkpoint(setup: TrainSetup) -> Callable[[LoopState], None]:
    """A consistent ``model_last`` + ``state_last`` pair (optimiser, schedule, step, RNG, best)
    whatever the moment of a crash (:func:`save_pair`); rank 0 writes, every rank waits."""
    files = setup.files

    def save(state: LoopState) -> None:
        if setup.info.main:
            train_state = {
                "step": state.step,
                "optimizer": setup.optimizer.state_dict(),
                "scheduler": setup.scheduler.state_dict(),
                "rng": rng_state(),
                "best": state.best,
            }
            save_pair(
                files.out,
                state.step,
                lambda p: save_model(p, setup.model, setup.cfg, setup.class_names, setup.cat_ids, state.step),
                lambda p: save_train_state(p, train_state),
                files.model_last,
                files.state_last,
            )
        barrier()

    return save


def default_hooks(setup: TrainSetup, progress: bool = True) -> list[Hook]:
    """Time budget, progress bar (rank 0), loss log, evaluation + best model (with a validation
    set), checkpoint, curves — configured from ``setup.cfg.train``, in that order."""
    tc, main, files = setup.cfg.train, setup.info.main, setup.files
    hooks: list[Hook] = [TimeBudgetHook(tc.time_budget_min, tc.warmup_iters, setup.info.world_size, main)]
    if progress and main:
        hooks.append(ProgressHook())
    hooks.append(LossLogHook(tc.log_period, setup.write, files.metrics if main else None))
    if setup.val_set is not None:
        evaluate, record = _evaluation(setup)
        hooks.append(EvalHook(tc.eval_period, evaluate, record, interruptible=not setup.info.distributed, verbose=main))

    def draw() -> None:
        if main and files.metrics.exists():
            plot_metrics(files.metrics, files.curves)

    hooks += [CheckpointHook(tc.checkpoint_period, _checkpoint(setup)), CurvesHook(tc.checkpoint_period, draw)]
    return hooks

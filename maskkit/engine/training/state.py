"""What the training loop and its hooks share: the run's fixed parts (:class:`TrainSetup`, one
object built once by :func:`maskkit.engine.training.loop.fit`) and what changes as it runs
(:class:`LoopState`). The config is never written while a run goes: the live length of the run
is ``LoopState.max_iter`` (a time budget may change it), and the schedule reads it from there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from maskkit.engine.distributed import DistInfo
from maskkit.engine.training.runfolder import RunFiles
from maskkit.engine.training.signals import StopFlag

__all__ = ["LoopState", "TrainSetup"]


@dataclass
class LoopState:
    """The loop's live state. ``losses`` are the last step's loss terms (averaged over processes
    and accumulation steps); ``stopping`` is the number of a stop signal received; ``best`` and
    ``step`` are saved with each checkpoint and restored by a resume."""

    max_iter: int  # the run's length now (the configured one unless a time budget shortened it)
    step: int = 0
    start_step: int = 0  # where this process started (a resumed step, else 0)
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    stopping: int | None = None
    interrupted: bool = False
    best: dict | None = None  # {"key", "value", "step"} of the best evaluation so far
    last_eval: dict | None = None
    stop: StopFlag | None = None  # the loop's stop flag while it runs (a hook may make its work interruptible)

    @property
    def finished(self) -> bool:
        return self.step >= self.max_iter


@dataclass(frozen=True)
class TrainSetup:
    """The fixed parts of one run: its config, model and optimisation, where it writes, on which
    process and device, the label mapping saved with the model, the validation set (or None)
    and the metrics writers (rank 0)."""

    cfg: Any  # maskkit.config.Config
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    files: RunFiles
    info: DistInfo
    device: torch.device
    class_names: list[str]
    cat_ids: list[int]
    val_set: Any = None
    writers: list = field(default_factory=list)

    def write(self, record: dict) -> None:
        """Send a record (``step`` + named floats) to every metrics writer."""
        for w in self.writers:
            w.write(record)

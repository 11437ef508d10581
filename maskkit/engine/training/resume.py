"""``--resume``: continue a run from the newest complete checkpoint pair of its folder (the
stamped pairs of :mod:`maskkit.engine.training.runfolder`, newest first, then ``model_last`` +
``state_last``), with the exact data stream and RNG state. A pair cut by a crash, or damaged,
is skipped for an older one; a checkpoint of another model (:class:`IncompatibleCheckpoint`)
stops at once, since no older pair of that folder will fit either."""

from __future__ import annotations

import sys
from pathlib import Path

from maskkit.checkpoint import (
    IncompatibleCheckpoint,
    check_compatible,
    load_state_into,
    load_train_state,
    read_model_file,
)
from maskkit.engine.training.rng import set_rng_state
from maskkit.engine.training.runfolder import promote, resume_candidates
from maskkit.engine.training.state import LoopState, TrainSetup
from maskkit.errors import CheckpointError, first_line

__all__ = ["resume"]


def _load_pair(setup: TrainSetup, state: LoopState, model_path: Path, state_path: Path) -> None:
    mf = read_model_file(model_path)
    check_compatible(mf.config, setup.cfg, mf.path, "--resume checkpoint")
    saved = load_train_state(state_path)
    missing = [k for k in ("optimizer", "scheduler", "rng") if k not in saved]
    if missing:
        raise CheckpointError(f"{state_path}: the training state has no {', '.join(missing)} entry (damaged)")
    if int(saved["step"]) != mf.step:
        raise CheckpointError(
            f"{state_path}: step {saved['step']} does not match "
            f"{mf.path} (step {mf.step}); the run folder is inconsistent"
        )
    load_state_into(setup.model, mf.state_dict, mf.path)
    try:
        setup.optimizer.load_state_dict(saved["optimizer"])
        setup.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # torch's messages for a state of another shape
        raise CheckpointError(f"{state_path}: the training state does not fit this run ({first_line(e)})") from None
    state.start_step = state.step = int(saved["step"])
    state.best = saved.get("best")


def resume(setup: TrainSetup, state: LoopState) -> None:
    """Load the newest complete checkpoint pair of the run folder into ``setup``'s model and
    optimisation and ``state`` (step, best). Raises the first pair's error when none loads."""
    files = setup.files
    pairs = resume_candidates(files.out, files.model_last, files.state_last)
    if not any(m.exists() for m, _ in pairs):
        raise CheckpointError(
            f"{files.out}: no checkpoint to resume from (no model_last.safetensors); "
            "start the run without --resume (with --overwrite if the folder holds files of it)"
        )
    errors = []
    for model_path, state_path in pairs:
        try:
            _load_pair(setup, state, model_path, state_path)
        except IncompatibleCheckpoint:
            raise
        except CheckpointError as e:
            errors.append(e)
            continue
        main = setup.info.main
        if errors and main:
            print(
                f"maskkit: resuming from {model_path} (step {state.step}); skipped a newer, incomplete "
                f"checkpoint ({errors[0]})",
                file=sys.stderr,
            )
        if model_path != files.model_last and main:  # a kill before *_last were replaced
            promote(model_path, state_path, files.model_last, files.state_last)
        return
    raise errors[0]

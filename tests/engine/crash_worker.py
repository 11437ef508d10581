"""Worker of tests/engine/test_crash_resume.py (not a test module): trains the tiny model in a
run folder and SIGKILLs itself at the ``kill_at``-th file-system event of the run, where an
event is a call of ``os.fsync``, ``os.replace``, ``os.link`` or ``os.unlink``. At an ``fsync``
of a file the file is first cut to half its size, as a kill in the middle of writing it would
leave it. ``kill_at=0`` never kills. Runs in a forkserver child so torch is imported once."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_engine_model import TinyDataset, TinyModel, tiny_config  # noqa: E402

from maskkit.engine.train import fit  # noqa: E402

MAX_ITER, PERIOD = 6, 2


def _armed(kill_at: int, counter: list[int]):
    def wrap(name, fn):
        def inner(*args, **kw):
            counter[0] += 1
            if counter[0] == kill_at:
                if name == "fsync" and os.fstat(args[0]).st_size > 0 and os.path.isfile(f"/proc/self/fd/{args[0]}"):
                    os.ftruncate(args[0], os.fstat(args[0]).st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kw)

        return inner

    for name in ("fsync", "replace", "link", "unlink"):
        setattr(os, name, wrap(name, getattr(os, name)))


def train(out: str, kill_at: int, resume: bool) -> int:
    """Train (or resume) to MAX_ITER; returns the number of file-system events seen."""
    torch.set_num_threads(1)
    counter = [0]
    if kill_at:
        _armed(kill_at, counter)
    else:
        _armed(-1, counter)
    torch.manual_seed(0)
    model = TinyModel(noisy=True)
    fit(
        tiny_config(max_iter=MAX_ITER, checkpoint_period=PERIOD),
        model,
        TinyDataset(),
        out,
        resume=resume,
        progress=False,
        overwrite=not resume,
    )
    return counter[0]


def run_and_count(out: str, queue) -> None:
    queue.put(train(out, 0, False))

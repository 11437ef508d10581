"""Worker of tests/engine/test_crash_resume.py (not a test module): trains the tiny model in a
run folder and SIGKILLs itself at the ``kill_at``-th file-system event of the run, where an
event is a call of ``os.fsync``, ``os.replace``, ``os.link`` or ``os.unlink`` on a file or folder
inside the run folder (others, such as Python writing ``__pycache__`` files on a first import in
a fresh checkout, are not counted: their number differs between runs). At an ``fsync`` of a file
the file is first cut to half its size, as a kill in the middle of writing it would leave it.
``kill_at=0`` never kills. Runs in a forkserver child so torch is imported once."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_engine_model import TinyDataset, TinyModel, tiny_config  # noqa: E402

from maskkit.engine.training.loop import fit  # noqa: E402

MAX_ITER, PERIOD = 6, 2


def _concerns(name: str, args: tuple, folder: str) -> bool:
    """Whether the call acts on something inside ``folder`` (an fd for fsync, paths otherwise)."""
    paths = [os.path.realpath(f"/proc/self/fd/{args[0]}")] if name == "fsync" else [str(a) for a in args[:2]]
    return any(os.path.realpath(p).startswith(folder + os.sep) or os.path.realpath(p) == folder for p in paths)


def _armed(kill_at: int, counter: list[int], out: str):
    folder = os.path.realpath(out)

    def wrap(name, fn):
        def inner(*args, **kw):
            if not _concerns(name, args, folder):
                return fn(*args, **kw)
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
    _armed(kill_at or -1, counter, out)
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

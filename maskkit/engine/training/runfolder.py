"""Crash safety of a run folder.

* **Consistent checkpoint pairs.** Each checkpoint is written as a step-stamped pair
  ``.checkpoints/model_<step>.safetensors`` + ``.checkpoints/state_<step>.pt`` (each file atomic:
  temporary file, fsync, rename), then hard-linked over ``model_last.safetensors`` and
  ``state_last.pt``, and only then are older stamped pairs deleted. A ``kill -9`` at any point
  leaves at least one complete pair with equal steps: :func:`resume_candidates` lists them newest
  first and ``--resume`` takes the newest that loads.
* **Temporary files** of interrupted writes (``.<name>.*.tmp``) are removed when the next run
  starts in the folder (it holds the lock, so no writer is alive).
* **metrics.jsonl** is cut back to the resumed step, so a resumed run has no duplicate lines.
* **Protection.** A fresh run refuses a folder that already holds a run unless it resumes or
  overwrites it explicitly; :class:`RunLock` (``flock`` on ``<out>/.lock``) is held for the
  run's lifetime so two runs never write one folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from maskkit.atomic import atomic_write_text, fsync_dir
from maskkit.errors import MaskkitError

__all__ = [
    "RunFiles",
    "CKPT_DIR",
    "RunFolderError",
    "RunLock",
    "save_pair",
    "promote",
    "resume_candidates",
    "clean_temporaries",
    "truncate_metrics",
    "check_fresh",
]

CKPT_DIR = ".checkpoints"
_STAMPED = re.compile(r"^(model|state)_(\d+)\.(safetensors|pt)$")
# Files a run writes into its folder (what --overwrite removes).
RUN_FILES = (
    "model_last.safetensors",
    "model_best.safetensors",
    "state_last.pt",
    "metrics.jsonl",
    "curves.png",
    "results.json",
    "metrics.json",
)


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


class RunFolderError(MaskkitError):
    """The run folder holds another run, or is in use by a live one."""


def _stamped(out: Path, step: int) -> tuple[Path, Path]:
    d = out / CKPT_DIR
    return d / f"model_{step:09d}.safetensors", d / f"state_{step:09d}.pt"


def _link_over(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` atomically (a hard link renamed over it; a copy where
    the file system has no hard links)."""
    if dst.exists() and os.path.samefile(src, dst):
        return  # already linked (a rename of a file onto itself would leave ``tmp`` behind)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.link.tmp"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_pair(
    out: Path,
    step: int,
    write_model: Callable[[Path], object],
    write_state: Callable[[Path], object],
    model_last: Path,
    state_last: Path,
) -> None:
    """Write the checkpoint of ``step``: stamped pair first, then ``model_last``/``state_last``,
    then drop older stamped pairs. ``write_model(path)`` / ``write_state(path)`` write atomically."""
    model, state = _stamped(out, step)
    model.parent.mkdir(parents=True, exist_ok=True)
    write_model(model)
    write_state(state)
    fsync_dir(model.parent)
    promote(model, state, model_last, state_last)


def promote(model: Path, state: Path, model_last: Path, state_last: Path) -> None:
    """Make ``model_last``/``state_last`` the stamped pair (``model``, ``state``); also used by a
    resume that found a stamped pair newer than them (a kill between the two steps). Then the
    older stamped pairs are deleted."""
    _link_over(model, model_last)
    _link_over(state, state_last)
    fsync_dir(model_last.parent)
    for p in model.parent.iterdir():
        if _STAMPED.match(p.name) and p not in (model, state):
            p.unlink()


def resume_candidates(out: Path, model_last: Path, state_last: Path) -> list[tuple[Path, Path]]:
    """(model file, state file) pairs to try, newest stamped pair first, ``*_last`` last."""
    steps: dict[int, set[str]] = {}
    d = out / CKPT_DIR
    if d.is_dir():
        for p in d.iterdir():
            m = _STAMPED.match(p.name)
            if m:
                steps.setdefault(int(m.group(2)), set()).add(m.group(1))
    pairs = [_stamped(out, s) for s in sorted(steps, reverse=True) if steps[s] == {"model", "state"}]
    return pairs + [(model_last, state_last)]


def clean_temporaries(out: Path) -> list[Path]:
    """Remove what interrupted atomic writes left (``.<name>.<random>.tmp``); returns them."""
    removed = []
    for d in (out, out / CKPT_DIR):
        if d.is_dir():
            for p in d.glob(".*.tmp"):
                p.unlink()
                removed.append(p)
    return removed


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (and nothing unparsable: a line cut
    by a kill), atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def check_fresh(out: Path, overwrite: bool) -> None:
    """A fresh run may only start in a folder without a run (or with ``overwrite``: then the old
    run's files are removed first)."""
    found = [n for n in RUN_FILES if (out / n).exists()] + ([CKPT_DIR] if (out / CKPT_DIR).exists() else [])
    if not found:
        return
    if not overwrite:
        raise RunFolderError(
            f"{out}: already holds a training run ({', '.join(found)}); continue it with --resume, "
            "replace it with --overwrite, or choose another --out"
        )
    for n in found:
        p = out / n
        shutil.rmtree(p) if p.is_dir() else p.unlink()


class RunLock:
    """Exclusive lock on ``<out>/.lock`` while a run writes the folder (``fcntl.flock``: released
    by the kernel when the process dies, so a killed run never leaves a stale lock). Where
    ``fcntl`` does not exist (Windows) the lock is skipped."""

    def __init__(self, out: Path):
        self.path = out / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RunFolderError(
                f"{self.path.parent}: another training run is writing this folder "
                "(it holds .lock); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None

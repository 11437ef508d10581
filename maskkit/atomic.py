"""Atomic file writes: a temporary file in the same folder, flushed to disk, then ``os.replace``
(atomic on POSIX and Windows), so a crash, ``kill -9`` or Ctrl-C mid-write never leaves half a
file where a good one was (model files, training state, metrics.json, results JSON).

The file gets the mode an ordinary ``open(path, "w")`` would give (0666 minus the umask), not
``mkstemp``'s 0600, so a model written on a shared machine is readable by the others."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "fsync_dir", "umask_mode"]


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` minus the process umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return mode & ~int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)  # no /proc: read by setting (not thread-safe, restored at once)
    os.umask(old)
    return mode & ~old


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (the renames into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it over ``path``.
    The temporary file is removed when ``write`` fails (a full disk, Ctrl-C); the old ``path``
    is then untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # an unwritable folder: name the file asked for, not a random temporary name
        raise OSError(e.errno, e.strerror or os.strerror(e.errno or 0), str(path)) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())  # after the writer: safetensors re-creates the file with 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # name the file
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from None
        if not isinstance(e, OSError) and "No space left on device" in str(e):
            # safetensors / torch.save wrap ENOSPC in their own errors: report it as the OS error it is
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

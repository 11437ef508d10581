"""Signal a training subprocess once it has logged a few steps (for the stop-signal tests).
Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def signal_after_logged_steps(
    proc: subprocess.Popen, log: Path, signum: int, steps: int = 2, timeout: float = 150.0
) -> tuple[str, str]:
    """Wait until ``log`` (metrics.jsonl) holds ``steps`` lines, send ``signum`` to ``proc`` and
    return its ``(stdout, stderr)``; fails if the process ends first or nothing is logged in time."""
    deadline = time.time() + timeout
    while not (log.exists() and log.read_text().count("\n") >= steps):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{log}: fewer than {steps} lines after {timeout} s"
        time.sleep(0.1)
    proc.send_signal(signum)
    return proc.communicate(timeout=120)

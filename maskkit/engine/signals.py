"""Stop signals: SIGINT/SIGTERM set a flag that the training loop reads at each step
boundary, so it saves a consistent checkpoint before it stops."""
from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopFlag"]


class StopFlag:
    """Context manager: while active, SIGINT/SIGTERM set ``self.signal``; a second Ctrl-C
    aborts at once (KeyboardInterrupt). Only installs handlers in the main thread."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.signal = signum

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

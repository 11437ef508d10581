"""Stop signals: SIGINT/SIGTERM set a flag that the training loop reads at each step
boundary, so it saves a consistent checkpoint before it stops; inside
:meth:`StopFlag.interruptible` (an evaluation) the signal raises :class:`StopRequested` at once.
An interrupted run exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as a
shell reports a process killed by it, so scripts can tell it from a finished run."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

__all__ = ["StopFlag", "StopRequested", "exit_code"]


class StopRequested(Exception):
    """Raised by the signal handler inside :meth:`StopFlag.interruptible`."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def exit_code(signum: int | None) -> int:
    """The exit status of a run stopped by ``signum`` (0 when it was not)."""
    return 0 if signum is None else 128 + int(signum)


class StopFlag:
    """Context manager: while active, SIGINT/SIGTERM set ``self.signal``; a second Ctrl-C
    aborts at once (KeyboardInterrupt). Only installs handlers in the main thread."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._raise = False

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C aborts at once
        self.signal = signum
        if self._raise:
            self._raise = False
            raise StopRequested(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within this block a stop signal (or one already received) raises :class:`StopRequested`."""
        if self.signal is not None:
            raise StopRequested(self.signal)
        self._raise = True
        try:
            yield
        finally:
            self._raise = False

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

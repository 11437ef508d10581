"""User-facing errors. The CLI prints them as one line (``maskkit: error: ...``) and exits 2;
anything else is a bug and keeps its traceback."""

from __future__ import annotations

__all__ = ["MaskkitError", "DataError", "CheckpointError", "ImageTooLargeError", "first_line"]


class MaskkitError(Exception):
    """Base class of errors caused by the user's input (files, arguments, configs)."""


class DataError(MaskkitError, ValueError):
    """A dataset, annotation file or image that cannot be used; the message names the file."""


class CheckpointError(MaskkitError, ValueError):
    """A weights/checkpoint file that is missing, corrupt or for another model."""


class ImageTooLargeError(DataError):
    """An image whose bytes or pixel count exceed a limit (``maskkit serve`` answers 413)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type name where the message is empty,
    as ``EOFError()`` from an empty file): libraries' multi-line errors, kept to one line."""
    lines = str(e).strip().splitlines()
    return lines[0].strip() if lines else type(e).__name__

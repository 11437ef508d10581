"""The ``maskkit`` console script: one command, ecosystem-style verbs.

Each verb is one module of this package (``maskkit/cli/<verb>.py``) holding its flags
(``configure_parser(parser)``), its printing and its exit code (``run(args) -> int``); the work
itself is a library call. This is the only package that imports argparse. ``main`` turns user
errors (:class:`maskkit.errors.MaskkitError`, missing files) into one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from maskkit import __version__
from maskkit.errors import MaskkitError

__all__ = ["VERBS", "DATA_VERBS", "build_parser", "main"]

# verb -> (module, one-line help). "data" has sub-verbs, below.
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("maskkit.cli.demo", "synthesise data, train a small model, evaluate it and draw results (the main job)"),
    "train": ("maskkit.cli.train", "train a model preset on a COCO-format dataset"),
    "eval": ("maskkit.cli.eval", "COCO AP (or proposal AR) of a model file or a results JSON"),
    "predict": ("maskkit.cli.predict", "run a model on images, folders, globs or videos"),
    "bench": ("maskkit.cli.bench", "measure inference latency, side by side with a peer"),
    "models": ("maskkit.cli.models", "list model presets with parameters and GFLOPs"),
    "serve": ("maskkit.cli.serve", "try a model file in the browser: a local web page and a JSON endpoint"),
    "export": ("maskkit.cli.export", "export a model file to ONNX (whole pipeline, masks included) for ONNX Runtime"),
    "convert": (
        "maskkit.cli.convert",
        "convert published weights (centermask2, DeepMask/SharpMask .t7, ImageNet) to a model file",
    ),
}
DATA_VERBS: dict[str, tuple[str, str]] = {
    "synth": ("maskkit.cli.data_synth", "write the synthetic shapes dataset in COCO format"),
    "show": ("maskkit.cli.data_show", "draw a dataset's annotations to PNG files"),
}


def _add(sub, name: str, module: str, help_text: str, load: bool) -> None:
    """Add verb ``name``; its module is imported only when that verb is the one being run
    (``load``), so ``maskkit --help`` and each verb start without importing the others."""
    if not load:
        sub.add_parser(name, help=help_text)
        return
    mod = importlib.import_module(module)
    p = sub.add_parser(
        name,
        help=help_text,
        description=(mod.__doc__ or help_text).strip().split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.configure_parser(p)
    p.set_defaults(_handler=mod.run)


def _words(argv: list[str]) -> list[str]:
    return [a for a in argv if not a.startswith("-")]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskkit",
        description="CenterMask and SharpMask instance segmentation: train, evaluate, predict, export.",
    )
    parser.add_argument("--version", action="version", version=f"maskkit {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    words = _words(sys.argv[1:] if argv is None else argv)
    verb = words[0] if words else None
    data_verb = words[1] if verb == "data" and len(words) > 1 else None
    for name, (module, help_text) in VERBS.items():
        _add(sub, name, module, help_text, load=name == verb)
    data = sub.add_parser("data", help="dataset tools: synth, show")
    data_sub = data.add_subparsers(dest="data_verb", metavar="VERB")
    for name, (module, help_text) in DATA_VERBS.items():
        _add(data_sub, name, module, help_text, load=name == data_verb)
    data.set_defaults(_handler=None, _parser=data)
    return parser


EXIT_INPUT = 2  # bad input: arguments, config values, data or model files (MaskkitError)
EXIT_OS = 1  # the operating system refused: disk full, permissions, a file where a folder should be


def _one_line(e: BaseException) -> str:
    """The message on one line (or the exception's type where it has none). An error raised in
    a DataLoader worker arrives as "Caught X in DataLoader worker ... Original Traceback ...":
    only its last line, the original message, is kept."""
    lines = [part.strip() for part in str(e).strip().splitlines() if part.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        last = lines[-1]
        prefix = f"{type(e).__module__}.{type(e).__name__}: "
        return last[len(prefix) :] if last.startswith(prefix) else last
    return " ".join(lines) or type(e).__name__


def _os_error(e: OSError) -> str:
    """``file: reason`` of an OSError (both files for a failed rename or link)."""
    names = [str(n) for n in (e.filename, e.filename2) if n is not None]
    reason = e.strerror or _one_line(e)
    return f"{' -> '.join(names)}: {reason}" if names else reason


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "_handler", None)
    if handler is None:
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except MaskkitError as e:
        print(f"maskkit: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_INPUT
    except FileNotFoundError as e:
        print(f"maskkit: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as e:  # a full disk, a read-only or unwritable folder, --out naming a file, ...
        print(f"maskkit: error: {_os_error(e)}", file=sys.stderr)
        return EXIT_OS
    except KeyboardInterrupt:
        print("maskkit: interrupted", file=sys.stderr)
        return 130

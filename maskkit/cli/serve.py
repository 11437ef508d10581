"""Try a model file in the browser: a local web page with overlays, sliders and downloads.

    maskkit serve --weights run/model_best.safetensors      # then open http://127.0.0.1:7860

The page shows the model's name, classes and input size; upload an image (or pick a bundled
synthetic example) to see masks, boxes, class names and scores, move the score threshold (and
the top-N slider for SharpMask proposals), and download the COCO results JSON or the overlay
PNG. Scripts POST an image to /api/predict and get COCO results back:

    curl -F image=@photo.jpg 'http://127.0.0.1:7860/api/predict?score_thr=0.3'

Needs the serve extra: pip install 'maskkit[serve]'. Binds 127.0.0.1 (this machine only)
unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import sys

from maskkit.cli.common import add_precision_arguments
from maskkit.errors import MaskkitError
from maskkit.serve.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from maskkit.serve.session import DEFAULT_MAX_PROPOSALS, ServeSession

__all__ = ["configure_parser", "run"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="maskkit model file (e.g. run/model_best.safetensors)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: %(default)s, this machine only; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument(
        "--max-pixels",
        type=float,
        default=DEFAULT_MAX_PIXELS / 1e6,
        metavar="MP",
        help="refuse images above this many megapixels (default: %(default)g)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_BYTES / 2**20,
        metavar="MiB",
        help="refuse uploads above this size (default: %(default)g)",
    )
    parser.add_argument(
        "--max-proposals",
        type=int,
        default=DEFAULT_MAX_PROPOSALS,
        help="SharpMask: proposals computed per image, the top-N slider's maximum (default: %(default)s)",
    )
    add_precision_arguments(parser, "Default: the file's own precision (float32, or int8 for an INT8 file).")


def _check_port(host: str, port: int) -> None:
    """One clear error now, rather than uvicorn's after the model has loaded, when
    ``host:port`` cannot be listened on (taken, or an address this machine does not have)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind(addr)
    except OSError as e:
        raise MaskkitError(
            f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port or --host)"
        ) from None


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from maskkit.serve.app import create_app
    except ImportError as e:
        raise MaskkitError(
            f"maskkit serve needs the serve extra ({e.name} is missing): pip install 'maskkit[serve]'"
        ) from None
    if not 0 <= args.port <= 65535:
        raise MaskkitError(f"--port must be in 0..65535, got {args.port}")
    if args.max_pixels <= 0 or args.max_upload_mb <= 0:
        raise MaskkitError("--max-pixels and --max-upload-mb must be positive")
    _check_port(args.host, args.port)
    session = ServeSession(
        args.weights,
        device=args.device,
        max_proposals=args.max_proposals,
        precision=args.precision,
        runtime=args.runtime,
    )
    app = create_app(session, max_pixels=int(args.max_pixels * 1e6), max_bytes=int(args.max_upload_mb * 2**20))
    info = session.info
    print(
        f"maskkit serve: {info.name} ({info.system}, {len(info.classes)} classes) from {args.weights}; "
        f"{info.precision}",
        file=sys.stderr,
    )
    print(f"open http://{args.host}:{args.port}/ in a browser (Ctrl+C stops the server)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

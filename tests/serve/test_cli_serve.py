"""``maskkit serve`` argument handling (no server started)."""

from __future__ import annotations

import argparse
import socket
import sys

import pytest

from maskkit.cli.serve import configure_parser
from maskkit.cli.serve import run as run_cli
from maskkit.errors import MaskkitError


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    configure_parser(p)
    return p.parse_args(list(argv))


def test_defaults_bind_localhost():
    args = parse("--weights", "m.safetensors")
    assert (args.host, args.port, args.device, args.max_pixels, args.max_upload_mb, args.max_proposals) == (
        "127.0.0.1",
        7860,
        "cpu",
        20.0,
        30.0,
        100,
    )


def test_missing_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    with pytest.raises(
        MaskkitError,
        match=r"maskkit serve needs the serve extra \(uvicorn is missing\): pip install 'maskkit\[serve\]'",
    ):
        run_cli(parse("--weights", "m.safetensors"))


@pytest.mark.parametrize(
    "argv, match",
    [
        (("--port", "70000"), "--port must be in 0..65535"),
        (("--max-pixels", "0"), "must be positive"),
    ],
)
def test_bad_numbers(argv, match, needs_serve_extra):
    with pytest.raises(MaskkitError, match=match):
        run_cli(parse("--weights", "m.safetensors", *argv))


def test_port_in_use_is_one_clear_error(needs_serve_extra):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(MaskkitError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            run_cli(parse("--weights", "m.safetensors", "--port", str(port)))

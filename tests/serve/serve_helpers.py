"""Helpers for the ``maskkit serve`` tests (not a test module): tiny model files, a server
subprocess on a free port, and a headless Chromium driven by selenium."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _png(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG file from its header fields and the (filtered) scanline bytes (PNG spec, Sec. 11.2.2)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width x height`` 8-bit gray pixels, with one empty
    compressed block of data: a decompression bomb's header in 60 bytes."""
    return _png(width, height, 8, 0, b"")


def png_rgb48(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``rgb`` uint16 ``[H, W, 3]`` (PIL cannot write one)."""
    big = rgb.astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in big)  # filter type 0 per scanline
    return _png(rgb.shape[1], rgb.shape[0], 16, 2, raw)


def make_model_file(path: Path, system: str = "centermask") -> Path:
    """A small randomly initialised model file that ``maskkit.load_model`` reads back.

    CenterMask: ``centermask_lite_demo`` with 2 classes ("person", "dog" -> COCO ids 1, 18),
    its classification prior bias set to 0 so that an untrained model still gives detections
    (p = 0.5 instead of 0.01, above the 0.05 candidate threshold). SharpMask: ``sharpmask_demo``
    at 2 scales.
    """
    from maskkit.checkpoint import save_model
    from maskkit.models.zoo import build_model, get_config

    torch.manual_seed(0)
    if system == "centermask":
        cfg = get_config("centermask_lite_demo", num_classes=2)
        model = build_model(cfg.model)
        with torch.no_grad():
            _zero_cls_bias(model)
        names, cat_ids = ["person", "dog"], [1, 18]
    else:
        cfg = get_config("sharpmask_demo", overrides=["model.scales=[-0.5,0.0]"])
        model = build_model(cfg.model)
        names, cat_ids = ["object"], [1]
    return save_model(path, model.eval(), cfg, class_names=names, cat_ids=cat_ids)


def _zero_cls_bias(model: torch.nn.Module) -> None:
    found = [m for n, m in model.named_modules() if n.endswith("cls_logits")]
    assert found, "no cls_logits layer in the CenterMask model"
    for m in found:
        m.bias.zero_()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """``(status, body)`` of a GET, 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def post_image(
    url: str, data: bytes, filename: str = "upload.png", field: str = "image", timeout: float = 30.0
) -> tuple[int, object]:
    """POST ``data`` as multipart form field ``field``; ``(status, parsed JSON body)``."""
    boundary = "maskkit-test-boundary-7f3a"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@contextlib.contextmanager
def running_server(weights: Path, *extra: str, startup_timeout: float = 60.0):
    """``maskkit serve`` in a subprocess on a free port; yields its base URL and always kills
    it (and reads its stderr into the failure message when it dies early)."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    log = open(weights.parent / f"serve-{port}.log", "w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskkit", "serve", "--weights", str(weights), "--port", str(port), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(weights.parent),
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(
                    f"maskkit serve exited with {proc.returncode}:\n{log.read().decode(errors='replace')}"
                )
            try:
                if get(base + "api/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"maskkit serve did not answer within {startup_timeout:.0f} s")
            time.sleep(0.2)
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def browser_missing_reason() -> str | None:
    """Why the browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(Path(p).is_file() for p in CHROMIUM_CANDIDATES) and not shutil.which("chromium"):
        return "no Chromium browser (Debian: apt-get install chromium chromium-driver; .ci/run installs them as root)"
    if not any(Path(p).is_file() for p in CHROMEDRIVER_CANDIDATES) and not shutil.which("chromedriver"):
        return "no chromedriver (Debian: apt-get install chromium-driver)"
    return None


def headless_chromium(width: int = 1280, height: int = 900):
    """A selenium WebDriver on the system's headless Chromium and chromedriver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--disable-extensions",
    ):
        opts.add_argument(arg)
    opts.binary_location = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), shutil.which("chromium") or "")
    driver_path = next((p for p in CHROMEDRIVER_CANDIDATES if Path(p).is_file()), shutil.which("chromedriver"))
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))

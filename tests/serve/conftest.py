"""Fixtures of the ``maskkit serve`` tests: tiny model files (made here, no weights
downloaded) and skips with a clear reason where the serve extra is not installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import make_model_file  # noqa: E402


def serve_extra_missing() -> str | None:
    for mod in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install -e '.[serve]')"
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        return "python-multipart is not installed (pip install -e '.[serve]')"
    return None


@pytest.fixture(scope="session")
def centermask_file(tmp_path_factory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("serve_cm") / "tiny_centermask.safetensors", "centermask")


@pytest.fixture(scope="session")
def sharpmask_file(tmp_path_factory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("serve_sm") / "tiny_sharpmask.safetensors", "sharpmask")


@pytest.fixture(scope="session")
def needs_serve_extra() -> None:
    reason = serve_extra_missing()
    if reason:
        pytest.skip(reason)

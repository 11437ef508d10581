"""Shared fixtures. Tests are small and deterministic, on the CPU unless ``--device`` says otherwise.

The real COCO subset lives in ``../shared/data/coco-tiny`` beside the checkout (CI has it, a
user's clone does not): tests that need it use the ``coco_tiny`` fixture, which skips cleanly
when it is absent. ``MASKKIT_COCO_TINY`` points elsewhere if needed.

The model tests take the ``device`` fixture: ``pytest --device cuda`` (or
``MASKKIT_TEST_DEVICE=cuda``) runs them on a GPU; the default is the CPU. Asking for CUDA where
there is none is a usage error, not a skip. On CUDA, TF32 is switched off for the session: the
tests compare float32 results at float32 tolerances (``benchmarks/gpu_speed.py`` measures TF32).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default=None,
        help="device of the model tests: cpu (default), cuda or cuda:N; or set MASKKIT_TEST_DEVICE",
    )


def _test_device(config) -> torch.device:
    name = config.getoption("--device") or os.environ.get("MASKKIT_TEST_DEVICE") or "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise pytest.UsageError(f"--device {name}: not a device (cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device {name}: the tests run on cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: CUDA is not available on this machine")
    return dev


def pytest_configure(config):
    dev = _test_device(config)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def pytest_report_header(config):
    dev = _test_device(config)
    return f"maskkit test device: {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    """The device of the model tests (``--device`` / ``MASKKIT_TEST_DEVICE``, default cpu)."""
    return _test_device(pytestconfig)


def _move(obj, dev: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(dev)
    if isinstance(obj, dict):
        return {k: _move(v, dev) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, dev) for v in obj)
    return obj


@pytest.fixture(scope="session")
def to_device(device):
    """``to_device(x)``: tensors, and lists / tuples / dicts of them, moved to the test device
    (tv_tensors keep their type)."""
    return lambda obj: _move(obj, device)


def _coco_tiny_dir() -> Path:
    env = os.environ.get("MASKKIT_COCO_TINY")
    return Path(env) if env else REPO.parent / "shared" / "data" / "coco-tiny"


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    """Root of the real COCO 2017 subset (annotations/, train2017/, val2017/), or skip."""
    root = _coco_tiny_dir()
    if not (root / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"COCO subset not found at {root} (it lives in ../shared beside the checkout)")
    return root


@pytest.fixture(autouse=True)
def _deterministic():
    # One intra-op thread per test process: the suite runs as `pytest -n 2` on 2 cores, and
    # small ops with 2 threads each were measured 5-10x slower than with 1 on that machine.
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield

"""Shared fixtures. Tests are CPU-only, small and deterministic.

The real COCO subset lives in ``../shared/data/coco-tiny`` beside the checkout (CI has it, a
user's clone does not): tests that need it use the ``coco_tiny`` fixture, which skips cleanly
when it is absent. ``MASKKIT_COCO_TINY`` points elsewhere if needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


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

"""Issue #14 item 4: a run SIGKILLed at any file-system event of training (inside each
checkpoint write included: a file cut in half, a temporary file not yet renamed, one of
model_last/state_last replaced and not the other) always resumes and ends with exactly the
weights of an uninterrupted run, no temporary files, and one metrics line per step."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import crash_worker  # noqa: E402

from maskkit.checkpoint import load_train_state, read_model_file  # noqa: E402
from maskkit.engine.training.runfolder import CKPT_DIR, resume_candidates  # noqa: E402


@pytest.fixture(scope="module")
def ctx():
    c = mp.get_context("forkserver")
    c.set_forkserver_preload(["torch", "maskkit.engine.training.loop", "crash_worker"])
    return c


def _run(ctx, out: Path, kill_at: int, resume: bool) -> int:
    p = ctx.Process(target=crash_worker.train, args=(str(out), kill_at, resume))
    p.start()
    p.join(120)
    assert p.exitcode is not None, "worker hung"
    return p.exitcode


def _weights(out: Path) -> dict:
    return read_model_file(out / "model_last.safetensors").state_dict


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_anywhere_resumes_to_the_same_weights(ctx, tmp_path):
    q = ctx.Queue()
    ref_dir = tmp_path / "ref"
    p = ctx.Process(target=crash_worker.run_and_count, args=(str(ref_dir), q))
    p.start()
    events = q.get(timeout=120)
    p.join(60)
    assert p.exitcode == 0 and events > 30  # 3 checkpoints of ~12 events each
    ref = _weights(ref_dir)
    for kill_at in [int(k) for k in os.environ.get("CRASH_POINTS", "").split()] or range(1, events + 1):
        out = tmp_path / f"k{kill_at}"
        assert _run(ctx, out, kill_at, resume=False) == -signal.SIGKILL, kill_at
        pairs = resume_candidates(out, out / "model_last.safetensors", out / "state_last.pt")
        has_checkpoint = any(m.exists() for m, _ in pairs)
        assert _run(ctx, out, 0, resume=has_checkpoint) == 0, kill_at
        got = _weights(out)
        assert got.keys() == ref.keys()
        for k in ref:
            assert torch.equal(got[k], ref[k]), (kill_at, k)
        assert load_train_state(out / "state_last.pt")["step"] == crash_worker.MAX_ITER
        assert not list(out.glob(".*.tmp")) and not list((out / CKPT_DIR).glob(".*.tmp")), kill_at
        steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, crash_worker.MAX_ITER + 1)), (kill_at, steps)

"""2-process DistributedDataParallel (Gloo, CPU) == 1 process at the same global batch:
same logged losses, same weights, same (gathered) evaluation."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maskkit.checkpoint import read_model_file

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(run: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(line) for line in open(run / "metrics.jsonl")]
    return [r for r in lines if "loss" in r], [r for r in lines if "eval/segm/AP" in r]


@pytest.mark.slow  # two torchrun workers + one plain run: ~20-40 s of process start-up on 2 cores
@pytest.mark.timeout(300)
def test_two_processes_match_one(tmp_path):
    from maskkit.data.synthetic import generate

    val_root = generate(tmp_path / "data", num_train=0, num_val=5, seed=1, size=64, progress=False)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parents[1]), os.environ.get("PYTHONPATH")])),
    }
    worker = str(HERE / "ddp_worker.py")
    one = subprocess.run(
        [sys.executable, worker, str(tmp_path / "one"), str(val_root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--nnodes=1",
            f"--master_port={_free_port()}",
            worker,
            str(tmp_path / "two"),
            str(val_root),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    losses1, evals1 = _records(tmp_path / "one")
    losses2, evals2 = _records(tmp_path / "two")
    assert [r["step"] for r in losses1] == [r["step"] for r in losses2] == [1, 2, 3, 4]
    for a, b in zip(losses1, losses2):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    w1 = read_model_file(tmp_path / "one" / "model_last.safetensors").state_dict
    w2 = read_model_file(tmp_path / "two" / "model_last.safetensors").state_dict
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6, msg=k)
    # distributed evaluation gathered every rank's predictions before COCOeval
    assert len(evals1) == len(evals2) == 1
    for k, v in evals1[0].items():
        if isinstance(v, float) and v == v:
            assert evals2[0][k] == pytest.approx(v, abs=1e-9), k

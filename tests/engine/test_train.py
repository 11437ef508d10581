"""Training loop: resume equality, accumulation, NaN stop, SIGINT, schedule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from signal_helpers import signal_after_logged_steps  # noqa: E402
from tiny_engine_model import TinyDataset, TinyModel, tiny_config  # noqa: E402

from maskkit.checkpoint import load_train_state, read_model_file  # noqa: E402
from maskkit.engine.training.loop import TrainingError, fit  # noqa: E402
from maskkit.engine.training.schedule import lr_factor  # noqa: E402
from maskkit.errors import CheckpointError  # noqa: E402


def _train(out, cfg, resume=False, noisy=True, seed=0, **kw):
    torch.manual_seed(seed)
    model = TinyModel(noisy=noisy, **kw)
    fit(cfg, model, TinyDataset(), out, resume=resume, progress=False)
    return model


def test_resume_equals_straight_run(tmp_path):
    straight = _train(tmp_path / "a", tiny_config(max_iter=6))
    _train(tmp_path / "b", tiny_config(max_iter=3))
    # a different init seed: resume must overwrite every weight and restore every RNG stream
    resumed = _train(tmp_path / "b", tiny_config(max_iter=6), resume=True, seed=99)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)
    # the run is not trivially constant: the weights moved
    torch.manual_seed(0)
    assert not torch.allclose(TinyModel().fc.weight, straight.fc.weight)
    assert load_train_state(tmp_path / "b" / "state_last.pt")["step"] == 6
    assert read_model_file(tmp_path / "b" / "model_last.safetensors").step == 6
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_accumulation_matches_big_batch(tmp_path):
    big = _train(tmp_path / "a", tiny_config(max_iter=3), noisy=False)
    acc = _train(tmp_path / "b", tiny_config(max_iter=3, accum_steps=2), noisy=False)
    for a, b in zip(big.parameters(), acc.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resume_refuses_other_class_count(tmp_path):
    _train(tmp_path, tiny_config(max_iter=1))
    cfg = tiny_config(max_iter=2)
    cfg.model.num_classes = 5
    with pytest.raises(CheckpointError, match=r"2 classes.*5 classes"):
        fit(cfg, TinyModel(), TinyDataset(), tmp_path, resume=True, progress=False, class_names=list("abcde"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(max_iter=8, checkpoint_period=2)
    with pytest.raises(TrainingError, match=r"loss became nan at step 5.*model_last\.safetensors"):
        _train(tmp_path, cfg, poison_at=5)
    assert read_model_file(tmp_path / "model_last.safetensors").step == 4
    assert load_train_state(tmp_path / "state_last.pt")["step"] == 4


_SIGINT_SCRIPT = r"""
import sys, time, torch
sys.path.insert(0, {here!r})
from tiny_engine_model import TinyDataset, TinyModel, tiny_config
from maskkit.engine.training.loop import fit

class Slow(TinyModel):
    def forward(self, images, targets=None):
        time.sleep(0.05)
        return super().forward(images, targets)

torch.set_num_threads(1)
torch.manual_seed(0)
s = fit(tiny_config(max_iter=100000), Slow(), TinyDataset(), {out!r}, progress=False)
print("STOPPED", s["step"], s["interrupted"], "SIGNAL", s["signal"])
"""


@pytest.mark.timeout(120)
def test_sigint_saves_and_exits_cleanly(tmp_path):
    script = _SIGINT_SCRIPT.format(here=str(Path(__file__).parent), out=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = signal_after_logged_steps(proc, tmp_path / "metrics.jsonl", signal.SIGINT, timeout=90)
    assert proc.returncode == 0, err
    step = int(out.split("STOPPED")[1].split()[0])
    assert "True" in out and 2 <= step < 100000
    assert f"SIGNAL {int(signal.SIGINT)}" in out  # the CLI turns it into one line + exit 130 (test below)
    assert read_model_file(tmp_path / "model_last.safetensors").step == step
    assert load_train_state(tmp_path / "state_last.pt")["step"] == step


def test_lr_schedule_warmup_step_cosine():
    cfg = tiny_config(max_iter=100).train
    cfg.warmup_iters, cfg.warmup_factor, cfg.steps, cfg.gamma = 10, 0.001, (50, 80), 0.1
    assert lr_factor(0, cfg) == pytest.approx(0.001)
    assert lr_factor(5, cfg) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(50, cfg) == pytest.approx(0.1)
    assert lr_factor(80, cfg) == pytest.approx(0.01)
    cfg.schedule = "cosine"
    assert lr_factor(10, cfg) == pytest.approx(0.5 * (1 + __import__("math").cos(__import__("math").pi * 0.1)))
    assert lr_factor(100, cfg) == pytest.approx(0.0)


def test_bf16_autocast_on_cpu_trains(tmp_path):
    cfg = tiny_config(max_iter=3, amp="bf16")
    model = _train(tmp_path, cfg, noisy=False)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert len(losses) == 3 and all(x == x for x in losses)
    with pytest.raises(Exception, match="fp16 needs a CUDA device"):
        _train(tmp_path / "b", tiny_config(max_iter=1, amp="fp16"))


def test_init_weights_refuses_other_class_count_and_copies_matching(tmp_path):
    _train(tmp_path / "a", tiny_config(max_iter=1))
    src = tmp_path / "a" / "model_last.safetensors"
    # TinyModel's fc is not a class-specific layer of CenterMask (maskkit.convert.finetune): a
    # 5-class fc does not fit and the start is refused, naming the tensor
    model = TinyModel()
    model.fc = torch.nn.Linear(8, 5)
    with pytest.raises(
        CheckpointError, match=r"train.init_weights does not fit .*fc.weight \(2, 8\) in file vs \(5, 8\)"
    ):
        fit(tiny_config(max_iter=1, init_weights=str(src)), model, TinyDataset(), tmp_path / "b", progress=False)
    # same class count: every tensor is copied before the first step (max_iter=0 trains nothing)
    torch.manual_seed(5)
    model = TinyModel()
    fit(tiny_config(max_iter=0, init_weights=str(src)), model, TinyDataset(), tmp_path / "c", progress=False)
    ref = read_model_file(src).state_dict
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref.items())


def test_adamw_optimizer_option_and_resume(tmp_path):
    """train.optimizer=adamw builds AdamW (with the same no-decay groups) and resumes exactly."""
    from maskkit.config import ConfigError
    from maskkit.engine.training.schedule import build_optimizer

    cfg = tiny_config(max_iter=4, optimizer="adamw", lr=0.01)
    opt = build_optimizer(TinyModel(), cfg.train)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["weight_decay"] for g in opt.param_groups} == {cfg.train.weight_decay, 0.0}
    straight = _train(tmp_path / "a", cfg)
    _train(tmp_path / "b", tiny_config(max_iter=2, optimizer="adamw", lr=0.01))
    resumed = _train(tmp_path / "b", tiny_config(max_iter=4, optimizer="adamw", lr=0.01), resume=True, seed=7)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="train.optimizer"):
        build_optimizer(TinyModel(), tiny_config(optimizer="lbfgs").train)


def test_tensorboard_logs_the_same_scalars_as_metrics_jsonl(tmp_path):
    """With tensorboard installed, <run>/tensorboard holds the loss/lr scalars of metrics.jsonl."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path, tiny_config(max_iter=4))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"loss", "lr"} <= set(events.Tags()["scalars"])
    for tag in ("loss", "lr"):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(r["step"], pytest.approx(r[tag], rel=1e-6)) for r in logged]


@pytest.mark.timeout(180)
def test_cli_train_sigterm_saves_and_exits_143_with_one_line(tmp_path):
    """``maskkit train`` stopped by SIGTERM: checkpoint of that step saved, exit 128 + 15, one
    message line on stderr naming the checkpoint and --resume, no traceback."""
    from maskkit.data.synthetic import generate

    data = generate(tmp_path / "data", num_train=8, num_val=2, size=96, progress=False)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "maskkit",
        "train",
        "--model",
        "centermask_lite_demo",
        "--data",
        str(data),
        "--out",
        str(out),
        "--iters",
        "100000",
        "--batch",
        "2",
        "--no-progress",
        "--set",
        "train.log_period=1",
        "--set",
        "data.min_size_train=[96]",
        "--set",
        "data.max_size_train=128",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, err = signal_after_logged_steps(proc, out / "metrics.jsonl", signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "stopped by signal" in line]
    assert len(lines) == 1 and "--resume" in lines[0] and "model_last.safetensors" in lines[0]
    step = read_model_file(out / "model_last.safetensors").step
    assert step >= 2 and load_train_state(out / "state_last.pt")["step"] == step


def test_cpu_threads_leave_cores_to_the_loader_workers_during_the_steps(tmp_path):
    """``train.cpu_threads``: -1 = torch's threads minus data.num_workers (at least 1) while the
    steps run, N = N, 0 = unchanged; torch's count is restored for what follows (the final
    evaluation, the caller)."""
    seen: list[int] = []

    class Counting(TinyModel):
        def forward(self, images, targets=None):
            if self.training:
                seen.append(torch.get_num_threads())
            return super().forward(images, targets)

    before = torch.get_num_threads()
    try:
        for base, setting, workers, expect in ((4, -1, 1, 3), (4, -1, 2, 2), (1, -1, 1, 1), (4, 3, 0, 3), (4, 0, 1, 4)):
            torch.set_num_threads(base)
            seen.clear()
            cfg = tiny_config(max_iter=2, cpu_threads=setting)
            cfg.data.num_workers = workers
            fit(cfg, Counting(), TinyDataset(), tmp_path / f"r{base}{setting}{workers}", progress=False)
            assert seen == [expect, expect] and torch.get_num_threads() == base, (base, setting, workers)
    finally:
        torch.set_num_threads(before)
    from maskkit.config import ConfigError
    from maskkit.models.zoo import get_config

    with pytest.raises(ConfigError, match="train.cpu_threads"):
        get_config("deepmask_demo", overrides=["train.cpu_threads=-2"])

"""Run-folder rules (issue #14 items 4, 6, 7, 12): a fresh run refuses a folder holding a run
unless told to overwrite it, a lock keeps two runs apart, metrics.jsonl is cut to the resumed
step, files follow the umask, and a stop signal gives exit 130/143 (also during evaluation)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny_engine_model import TinyDataset, TinyModel, tiny_config  # noqa: E402

from maskkit.atomic import atomic_write_text  # noqa: E402
from maskkit.checkpoint import load_train_state, read_model_file  # noqa: E402
from maskkit.engine.training.loop import fit  # noqa: E402
from maskkit.engine.training.runfolder import RunFolderError, RunLock, truncate_metrics  # noqa: E402
from maskkit.engine.training.signals import exit_code  # noqa: E402
from maskkit.errors import CheckpointError  # noqa: E402


def _fit(out, max_iter=2, **kw):
    torch.manual_seed(0)
    return fit(tiny_config(max_iter=max_iter), TinyModel(), TinyDataset(), out, progress=False, **kw)


def test_fresh_run_refuses_a_folder_with_a_run_and_overwrite_replaces_it(tmp_path):
    _fit(tmp_path, max_iter=3)
    before = (tmp_path / "model_last.safetensors").read_bytes(), (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match=r"already holds a training run.*--resume.*--overwrite"):
        _fit(tmp_path, max_iter=2)
    assert ((tmp_path / "model_last.safetensors").read_bytes(), (tmp_path / "metrics.jsonl").read_text()) == before
    _fit(tmp_path, max_iter=2, overwrite=True)
    assert read_model_file(tmp_path / "model_last.safetensors").step == 2
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_without_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        _fit(tmp_path, resume=True)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"\x80\x04K\x01."])
def test_resume_from_an_empty_or_foreign_state_file_is_one_clear_error(tmp_path, content):
    _fit(tmp_path)
    for p in (tmp_path / ".checkpoints").iterdir():
        p.unlink()  # only model_last/state_last left
    (tmp_path / "state_last.pt").unlink()
    (tmp_path / "state_last.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=r"state_last\.pt: (unreadable|not a maskkit)") as e:
        _fit(tmp_path, max_iter=4, resume=True)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["no optimizer", "optimizer of another shape"])
def test_resume_from_a_damaged_state_file_is_one_line_naming_it(tmp_path, damage):
    """A tampered state_last.pt (an entry missing, or an optimiser state of another shape) is one
    CheckpointError naming the file, not a KeyError / ValueError from torch."""
    _fit(tmp_path)
    for p in (tmp_path / ".checkpoints").iterdir():
        p.unlink()  # only model_last/state_last left
    saved = load_train_state(tmp_path / "state_last.pt")
    if damage == "no optimizer":
        del saved["optimizer"]
    else:
        saved["optimizer"]["param_groups"][0]["params"] = saved["optimizer"]["param_groups"][0]["params"][:1]
    (tmp_path / "state_last.pt").unlink()
    torch.save(saved, tmp_path / "state_last.pt")
    with pytest.raises(
        CheckpointError, match=r"state_last\.pt: the training state (has no optimizer|does not fit)"
    ) as e:
        _fit(tmp_path, max_iter=4, resume=True)
    assert "\n" not in str(e.value)


def test_a_checkpoint_of_another_model_stops_the_resume_at_once(tmp_path):
    """IncompatibleCheckpoint (another class count): no older pair of the folder is tried."""
    from maskkit.checkpoint import IncompatibleCheckpoint

    _fit(tmp_path, max_iter=2)
    cfg = tiny_config(max_iter=4)
    cfg.model.num_classes = 3
    with pytest.raises(IncompatibleCheckpoint, match=r"is for .* but this run is"):
        fit(cfg, TinyModel(), TinyDataset(), tmp_path, progress=False, resume=True, class_names=["a", "b", "c"])


def test_a_locked_folder_is_refused_while_the_lock_is_held(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderError, match="another training run is writing this folder"):
            _fit(tmp_path)
    _fit(tmp_path)  # released


def test_truncate_metrics_keeps_steps_up_to_the_resumed_one_and_drops_a_cut_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    truncate_metrics(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    from maskkit.checkpoint import save_model, save_train_state
    from maskkit.models.zoo import build_model, get_config

    cfg = get_config("centermask_lite_demo", 2)
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
        save_model(tmp_path / "m.safetensors", build_model(cfg.model), cfg, ["a", "b"])  # safetensors' own writer
        save_train_state(tmp_path / "state.pt", {"step": 1})
    finally:
        os.umask(old)
    for name in ("x.json", "m.safetensors", "state.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_exit_codes_of_signals():
    assert (exit_code(None), exit_code(signal.SIGINT), exit_code(signal.SIGTERM)) == (0, 130, 143)


_EVAL_SCRIPT = r"""
import sys, time, torch
sys.path.insert(0, {here!r})
from tiny_engine_model import TinyDataset, TinyModel, tiny_config
from maskkit.data.coco import CocoDataset
from maskkit.engine.training.signals import exit_code
from maskkit.engine.training.loop import fit

class SlowEval(TinyModel):
    def forward(self, images, targets=None):
        if not self.training:
            open({marker!r}, "a").write("e")
            time.sleep(0.5)
        return super().forward(images, targets)

torch.set_num_threads(1)
torch.manual_seed(0)
val = CocoDataset({val!r} + "/annotations/instances_val.json", {val!r} + "/val")
s = fit(tiny_config(max_iter=1000, eval_period=2), SlowEval(), TinyDataset(), {out!r}, val_set=val, progress=False)
print("STOPPED", s["step"], s["signal"])
sys.exit(exit_code(s["signal"]))
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_evaluation_stops_the_run_saves_and_exits_128_plus_signal(tmp_path, sig, code):
    from maskkit.data.synthetic import generate

    val = generate(tmp_path / "data", num_train=0, num_val=12, seed=1, size=64, progress=False)
    marker = tmp_path / "evaluating"
    script = _EVAL_SCRIPT.format(
        here=str(Path(__file__).parent), out=str(tmp_path / "run"), marker=str(marker), val=str(val)
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert f"STOPPED 2 {int(sig)}" in out, out
    assert "evaluation at step 2 interrupted" in err and "Traceback" not in err
    assert len(marker.read_text()) < 12  # it did not evaluate the whole validation set
    assert read_model_file(tmp_path / "run" / "model_last.safetensors").step == 2
    assert load_train_state(tmp_path / "run" / "state_last.pt")["step"] == 2


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file(tiny_disk):
    from maskkit.checkpoint import save_train_state

    save_train_state(tiny_disk / "state_last.pt", {"step": 1})
    with pytest.raises(OSError, match="No space left on device") as e:
        save_train_state(tiny_disk / "state_last.pt", {"step": 2, "big": torch.zeros(100_000)})
    assert e.value.filename == str(tiny_disk / "state_last.pt")
    assert load_train_state(tiny_disk / "state_last.pt")["step"] == 1
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["state_last.pt"]  # no temporary file left

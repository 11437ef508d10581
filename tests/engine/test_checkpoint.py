"""Model files (safetensors + embedded config) and training-state files: round trip and
every kind of bad file refused with one CheckpointError naming the file."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from maskkit.checkpoint import (
    atomic_write,
    load_model,
    load_train_state,
    read_model_file,
    save_model,
    save_train_state,
)
from maskkit.config import config_to_json
from maskkit.errors import CheckpointError
from maskkit.models.zoo import build_model, get_config


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    """A randomly initialised demo CenterMask with 2 classes and non-trivial BN statistics."""
    torch.manual_seed(0)
    cfg = get_config("centermask_lite_demo", num_classes=2)
    model = build_model(cfg.model)
    model.train()
    with torch.no_grad():  # move the BN running stats away from their init values
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.9, 1.1)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_model(path, model, cfg, ["disc", "square"], [11, 42], step=7)
    return path, model, cfg


def test_round_trip_restores_weights_buffers_and_metadata(demo_file):
    path, model, cfg = demo_file
    loaded = load_model(path)
    assert not loaded.training
    ref = model.state_dict()
    got = loaded.state_dict()
    assert ref.keys() == got.keys()
    assert any("running_mean" in k for k in ref)  # buffers are in the file too
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert loaded.info.class_names == ["disc", "square"]
    assert loaded.info.label_to_cat_id == {1: 11, 2: 42}
    assert loaded.info.config.name == "centermask_lite_demo"
    assert loaded.info.config.model == cfg.model
    assert read_model_file(path).step == 7


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: no such model file"):
        load_model(tmp_path / "nope.safetensors")


def test_not_safetensors(tmp_path):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a safetensors file" * 10)
    with pytest.raises(CheckpointError, match="junk.safetensors: not a safetensors model file"):
        load_model(bad)


def test_truncated_file(tmp_path, demo_file):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(demo_file[0].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        load_model(cut)


def test_safetensors_without_maskkit_metadata(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="plain.safetensors: .*without maskkit metadata"):
        load_model(plain)


def test_weights_for_another_class_count_are_refused(tmp_path, demo_file):
    """A file whose config says 5 classes but whose tensors are for 2: the first mis-shaped
    keys are named."""
    path, model, cfg = demo_file
    other = get_config("centermask_lite_demo", num_classes=5)

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"maskkit_config": config_to_json(other), "class_names": "[]", "cat_ids": "[]", "format_version": "1"}
    lying = tmp_path / "lying.safetensors"
    save_file(state, str(lying), metadata=meta)
    with pytest.raises(CheckpointError, match=r"lying.safetensors: weights do not match the model: .*shape mismatch"):
        load_model(lying)


def test_unexpected_and_missing_keys_are_named(tmp_path, demo_file):
    path, model, cfg = demo_file
    mf = read_model_file(path)
    state = dict(mf.state_dict)
    state["extra.weight"] = torch.zeros(1)
    dropped = next(iter(state))
    del state[dropped]
    meta = {"maskkit_config": config_to_json(cfg), "format_version": "1"}
    f = tmp_path / "keys.safetensors"
    save_file(state, str(f), metadata=meta)
    with pytest.raises(CheckpointError, match=rf"1 missing key\(s\) \(e.g. {dropped}\).*extra.weight"):
        load_model(f)


def test_corrupt_metadata(tmp_path):
    f = tmp_path / "meta.safetensors"
    save_file({"w": torch.zeros(2)}, str(f), metadata={"maskkit_config": "{not json", "format_version": "1"})
    with pytest.raises(CheckpointError, match="meta.safetensors: corrupt maskkit metadata"):
        load_model(f)


def test_train_state_round_trip_and_refuses_pickles(tmp_path):
    state = {
        "step": 3,
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": []},
        "rng": {"torch": torch.get_rng_state()},
        "best": None,
    }
    save_train_state(tmp_path / "state.pt", state)
    back = load_train_state(tmp_path / "state.pt")
    assert back["step"] == 3 and torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"step": 1, "x": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt: unreadable training-state file"):
        load_train_state(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="no training-state file"):
        load_train_state(tmp_path / "absent.pt")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "model_last.safetensors"
    target.write_text("old")

    def boom(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model_last.safetensors"]

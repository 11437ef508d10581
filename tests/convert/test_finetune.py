"""Fine-tuning on your own classes (``train.init_weights``, ``maskkit.convert.finetune``): every
tensor that fits loads, exactly the class-specific layers start fresh and are named, anything
else that does not fit is one clear error."""

from __future__ import annotations

import math

import pytest
import torch

from maskkit.checkpoint import save_model
from maskkit.config import InputConvention
from maskkit.convert.finetune import load_init_weights
from maskkit.errors import CheckpointError
from maskkit.models.zoo import build_model, get_config

CLASS_LAYERS = ["fcos.cls_logits", "mask_head.predictor", "maskiou.predictor"]


def _model_file(tmp_path, preset: str, num_classes: int | None, overrides=(), seed: int = 0):
    cfg = get_config(preset, num_classes, list(overrides))
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    k = cfg.model.num_classes
    path = save_model(tmp_path / f"{preset}_{k}.safetensors", model, cfg, [f"c{i}" for i in range(k)])
    return path, {n: v.clone() for n, v in model.state_dict().items()}


def _fresh(preset: str, num_classes: int | None, overrides=(), seed: int = 1):
    torch.manual_seed(seed)
    # no packaged trunk: these tests compare whole random models (and change the trunk's variant)
    model = build_model(get_config(preset, num_classes, list(overrides)).model, backbone_weights=False)
    return model, {n: v.clone() for n, v in model.state_dict().items()}


def test_other_class_count_loads_every_fitting_tensor_and_reinitialises_class_layers(tmp_path):
    path, file_sd = _model_file(tmp_path, "centermask_lite_demo", 80)  # e.g. a converted COCO model
    model, init = _fresh("centermask_lite_demo", 3)
    assert load_init_weights(model, path) == CLASS_LAYERS
    after = model.state_dict()
    reinit = [k for k in after if k.rsplit(".", 1)[0] in CLASS_LAYERS]
    assert sorted(reinit) == sorted(f"{layer}.{p}" for layer in CLASS_LAYERS for p in ("weight", "bias"))
    for k, v in after.items():
        if k in reinit:  # the model's own normal init, untouched
            assert torch.equal(v, init[k]) and v.shape[0] == 3, k
        else:
            assert torch.equal(v, file_sd[k]), k
    # the fresh layers are the constructors' normal init: focal prior bias, small normal weights
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(after["fcos.cls_logits.bias"], torch.full((3,), prior))
    assert after["mask_head.predictor.bias"].abs().max() == 0 and after["maskiou.predictor.bias"].abs().max() == 0
    assert 0.005 < after["fcos.cls_logits.weight"].std() < 0.015


def test_same_class_count_loads_everything(tmp_path):
    path, file_sd = _model_file(tmp_path, "centermask_lite_demo", 3)
    model, _ = _fresh("centermask_lite_demo", 3)
    assert load_init_weights(model, path) == []
    assert all(torch.equal(v, file_sd[k]) for k, v in model.state_dict().items())


def test_class_agnostic_mask_predictor_fits_and_loads(tmp_path):
    agnostic = ["model.mask.class_agnostic=true"]
    path, file_sd = _model_file(tmp_path, "centermask_lite_demo", 80, agnostic)
    model, _ = _fresh("centermask_lite_demo", 5, agnostic)
    assert load_init_weights(model, path) == ["fcos.cls_logits", "maskiou.predictor"]
    assert torch.equal(model.state_dict()["mask_head.predictor.weight"], file_sd["mask_head.predictor.weight"])


def test_deepmask_file_starts_sharpmask_and_everything_loads(tmp_path):
    path, file_sd = _model_file(tmp_path, "deepmask_demo", None)
    model, init = _fresh("sharpmask_demo", None)
    assert load_init_weights(model, path) == []
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in file_sd.items())
    refine = [k for k in after if k.startswith("refinement.")]
    assert refine and all(torch.equal(after[k], init[k]) for k in refine)  # stage 2 trains them from their init
    # and a SharpMask file into a SharpMask: every tensor, refinement included
    path2, file2 = _model_file(tmp_path, "sharpmask_demo", None, seed=4)
    assert load_init_weights(model, path2) == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in file2.items())


def test_anything_else_that_does_not_fit_is_one_clear_error(tmp_path):
    path, _ = _model_file(tmp_path, "centermask_lite_demo", 80)
    other_backbone, _ = _fresh("centermask_lite_demo", 3, ["model.backbone.variant=V-19-slim"])
    with pytest.raises(
        CheckpointError,
        match=r"train.init_weights does not fit this model beyond its class-specific "
        r"layers .*shape mismatch: backbone\.stages\.0\.blocks\.0\.aggregate"
        r"\.0\.weight \(48, 104, 1, 1\) in file vs \(112, 320, 1, 1\) in model",
    ):
        load_init_weights(other_backbone, path)
    no_maskiou, _ = _fresh("centermask_lite_demo", 3, ["model.mask.maskiou=false"])
    with pytest.raises(CheckpointError, match=r"not in the model: maskiou\.convs\.0\.bias"):
        load_init_weights(no_maskiou, path)
    sharpmask, _ = _fresh("sharpmask_demo", None)
    with pytest.raises(CheckpointError, match="is a centermask model file, this run trains a sharpmask"):
        load_init_weights(sharpmask, path)
    sm_path, _ = _model_file(tmp_path, "sharpmask_demo", None)
    deepmask, _ = _fresh("deepmask_demo", None)
    with pytest.raises(CheckpointError, match=r"not in the model: refinement\."):
        load_init_weights(deepmask, sm_path)
    with pytest.raises(CheckpointError, match="no such model file"):
        load_init_weights(deepmask, tmp_path / "absent.safetensors")


def test_training_engine_fine_tunes_and_says_once_which_layers(tmp_path, capsys):
    from maskkit.engine.training.loop import fit

    path, file_sd = _model_file(tmp_path, "centermask_lite_demo", 80)
    cfg = get_config("centermask_lite_demo", 3, [f"train.init_weights={path}", "train.max_iter=0"])
    torch.manual_seed(1)
    model = build_model(cfg.model)
    image = torch.rand(3, 64, 64)
    target = {
        "boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]),
        "labels": torch.tensor([1]),
        "masks": torch.ones(1, 64, 64, dtype=torch.uint8),
        "iscrowd": torch.tensor([0]),
    }
    fit(cfg, model, [(image, target)], tmp_path / "run", progress=False)  # max_iter 0: the start only
    err = capsys.readouterr().err
    assert err.count("re-initialised for 3 classes: fcos.cls_logits, mask_head.predictor, maskiou.predictor") == 1
    assert torch.equal(
        model.state_dict()["fpn.fpn.layer_blocks.0.0.weight"], file_sd["fpn.fpn.layer_blocks.0.0.weight"]
    )


def test_shape_invisible_settings_must_agree_and_input_convention_is_the_files(tmp_path):
    bgr = ["model.input_format=BGR255", "model.pixel_mean=[103.53,116.28,123.675]", "model.pixel_std=[1,1,1]"]
    path, _ = _model_file(tmp_path, "centermask_lite_demo", 80, bgr)  # as a converted official model
    model, _ = _fresh("centermask_lite_demo", 3)
    assert model.input_convention.format == "RGB"
    load_init_weights(model, path)
    official = InputConvention("BGR255", (103.53, 116.28, 123.675), (1.0, 1.0, 1.0))
    assert model.input_convention == official  # the file's: its weights expect that input
    assert model.cfg.input_format == "RGB"  # the run's config stays as configured
    assert model.pixel_mean.flatten().tolist() == pytest.approx([103.53, 116.28, 123.675])
    v1, _ = _fresh("centermask_lite_demo", 3, ["model.backbone.residual=false"])  # same shapes, other network
    with pytest.raises(CheckpointError, match=r"other settings: backbone.residual=True in the file vs False"):
        load_init_weights(v1, path)

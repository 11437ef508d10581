"""Model files and training-state files.

Model file (``model_last.safetensors`` / ``model_best.safetensors``): a safetensors file
holding the state dict (parameters *and* buffers: FrozenBN statistics, BN running stats) with
everything needed to rebuild the model in its metadata::

    maskkit_config  the full Config as JSON (model, data, train, eval, preset name)
    class_names     JSON list, index = label - 1
    cat_ids         JSON list, index = label - 1 -> the user's COCO category id
    input_convention  JSON: how the weights expect their input (format, pixel_mean, pixel_std);
                    files written before it existed state it in their config
    format_version  "1"
    step            training step the weights are from

so ``eval``, ``predict``, ``export`` and :func:`load_model` need nothing else. safetensors
never unpickles, so model files from strangers are safe to open.

Training-state file (``state_last.pt``): ``torch.save`` of plain containers of tensors and
numbers only (optimizer and scheduler state, step, RNG states, best metric), read back with
``torch.load(weights_only=True)``.

Every file is written atomically: to a temporary file in the same folder, then
``os.replace``; a crash mid-write never leaves a truncated ``last`` checkpoint behind.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from maskkit.atomic import atomic_write
from maskkit.config import ConfigError, InputConvention, config_to_json
from maskkit.errors import CheckpointError, first_line
from maskkit.models.zoo import build, input_convention_of, read_config, use_input_convention

__all__ = [
    "FORMAT_VERSION",
    "ModelFile",
    "save_model",
    "read_model_file",
    "load_state_into",
    "load_model",
    "check_compatible",
    "IncompatibleCheckpoint",
    "save_train_state",
    "load_train_state",
    "atomic_write",
]

FORMAT_VERSION = "1"


@dataclass
class ModelFile:
    """The contents of a model file: state dict, config and the dataset's label mapping."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    config: Any  # maskkit.config.Config
    class_names: list[str] = field(default_factory=list)
    cat_ids: list[int] = field(default_factory=list)  # label - 1 -> category id
    step: int = 0
    input: InputConvention | None = None  # the weights' input convention

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        return {i + 1: int(c) for i, c in enumerate(self.cat_ids)}


def _plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict (params + persistent buffers) as independent contiguous CPU tensors:
    safetensors refuses shared or non-contiguous storage."""
    model = getattr(model, "module", model)  # DDP wrapper
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    cfg: Any,
    class_names: list[str] | None = None,
    cat_ids: list[int] | None = None,
    step: int = 0,
) -> Path:
    """Write ``model``'s weights with ``cfg``, the label mapping and the weights' input convention
    (``model.input_convention``) embedded (atomically)."""
    class_names = list(class_names or [])
    cat_ids = [int(c) for c in (cat_ids or range(1, len(class_names) + 1))]
    convention = input_convention_of(model, cfg.model)
    metadata = {
        "maskkit_config": config_to_json(cfg),
        "class_names": json.dumps(class_names),
        "cat_ids": json.dumps(cat_ids),
        "input_convention": convention.to_json(),
        "format_version": FORMAT_VERSION,
        "step": str(int(step)),
    }
    state = _plain_state_dict(model)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a model file; :class:`CheckpointError` (one line naming the file) when it is
    missing, not safetensors, or carries no maskkit metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a safetensors model file ({first_line(e)})") from None
    if "maskkit_config" not in meta:
        raise CheckpointError(
            f"{path}: safetensors file without maskkit metadata (no embedded config); it was not written by maskkit"
        )
    version = meta.get("format_version", "?")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: model file format {version!r} is not supported (expected {FORMAT_VERSION!r})")
    try:
        cfg = read_config(meta["maskkit_config"])
        class_names = json.loads(meta.get("class_names", "[]"))
        cat_ids = [int(c) for c in json.loads(meta.get("cat_ids", "[]"))]
        step = int(meta.get("step", "0"))
        convention = (
            InputConvention.from_json(meta["input_convention"])
            if "input_convention" in meta
            else InputConvention.of(cfg.model)
        )
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupt maskkit metadata ({e})") from None
    n = int(cfg.model.num_classes)
    if cat_ids and (len(cat_ids) != n or len(set(cat_ids)) != n):
        raise CheckpointError(
            f"{path}: its category ids {cat_ids[:10]}{'...' if len(cat_ids) > 10 else ''} do not "
            f"give each of the model's {n} classes its own id"
        )
    return ModelFile(path, state, cfg, class_names, cat_ids, step, convention)


def _describe_mismatch(model_sd: dict, file_sd: dict, limit: int = 3) -> str:
    missing = [k for k in model_sd if k not in file_sd]
    unexpected = [k for k in file_sd if k not in model_sd]
    shapes = [
        f"{k} {tuple(file_sd[k].shape)} in file vs {tuple(model_sd[k].shape)} in model"
        for k in model_sd
        if k in file_sd and tuple(model_sd[k].shape) != tuple(file_sd[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:limit])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:limit])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {'; '.join(shapes[:limit])})")
    return "; ".join(parts)


def load_state_into(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | os.PathLike = "?") -> nn.Module:
    """Copy ``state_dict`` into ``model`` strictly; any missing/unexpected/mis-shaped key is
    a :class:`CheckpointError` naming the file and the first offending keys."""
    target = getattr(model, "module", model)
    problem = _describe_mismatch(target.state_dict(), state_dict)
    if problem:
        raise CheckpointError(f"{path}: weights do not match the model: {problem}")
    target.load_state_dict(state_dict, strict=True)
    return model


def _identity(cfg: Any) -> str:
    m = cfg.model
    return f"{cfg.name or m.system} ({m.system}, {m.num_classes} classes)"


class IncompatibleCheckpoint(CheckpointError):
    """A checkpoint of another model (system or class count): no other checkpoint of the same
    run folder will fit either."""


def check_compatible(saved_cfg: Any, cfg: Any, path: str | os.PathLike, what: str = "checkpoint") -> None:
    """Refuse a checkpoint made for another system or class count, naming both
    (:class:`IncompatibleCheckpoint`)."""
    a, b = saved_cfg.model, cfg.model
    if a.system != b.system or int(a.num_classes) != int(b.num_classes):
        raise IncompatibleCheckpoint(f"{path}: {what} is for {_identity(saved_cfg)} but this run is {_identity(cfg)}")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model described by a model file and load its weights; eval mode.

    The returned module carries ``model.info`` (:class:`maskkit.config.ModelInfo`: the full
    config, class names and category ids) so predictions can be reported with the user's ids.
    """
    mf = read_model_file(path)
    bad = next((k for k, v in mf.state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{mf.path}: tensor {bad} holds NaN or infinite values; the model cannot predict")
    model = build(mf.config, mf.class_names, mf.cat_ids, backbone_weights=False)  # the file holds every tensor
    load_state_into(model, mf.state_dict, mf.path)
    use_input_convention(model, mf.input)
    model.info.input = mf.input
    return model.to(device).eval()


# --------------------------------------------------------------------------- training state


def save_train_state(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save`` a dict of plain tensors / numbers / lists / dicts, atomically."""
    buf = io.BytesIO()  # serialised in memory, written with plain file I/O: a full disk is an OSError
    torch.save(state, buf)  # (torch.save straight to a file reports it as "unexpected pos")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getbuffer()))


def load_train_state(path: str | os.PathLike) -> dict:
    """Read a training-state file with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training-state file to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise CheckpointError(f"{path}: unreadable training-state file ({first_line(e)})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path}: not a maskkit training-state file (no 'step')")
    return state

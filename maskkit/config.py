"""Configuration: nested dataclasses, named presets, ``--set`` overrides, (de)serialisation.

A run is described by one :class:`Config`::

    Config(model=CenterMaskConfig(...) | SharpMaskConfig(...),
           data=DataConfig(...), train=TrainConfig(...), eval=EvalConfig(...))

The model part is system-specific and lives next to the model that reads it
(``maskkit/models/centermask/config.py``, ``maskkit/models/sharpmask/config.py``); every
model config has a ``system`` field ("centermask" / "sharpmask") that selects its class when
a saved config is read back. Presets are plain functions returning a full ``Config`` and are
collected in one flat table in :mod:`maskkit.models.zoo`.

Overrides are ``dotted.path=value`` strings, parsed and type-checked against the dataclass
field they name (``train.lr=0.005``, ``model.fpn_channels=128``,
``data.min_size_train=[480,512]``). No string interpolation, no ``exec``, no registries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from maskkit.errors import MaskkitError

__all__ = [
    "Config",
    "DataConfig",
    "TrainConfig",
    "EvalConfig",
    "WindowSamplerConfig",
    "ConfigError",
    "ModelInfo",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
    "config_from_json",
    "validate_config",
    "validate_model_config",
]


class ConfigError(MaskkitError, ValueError):
    """A configuration value, override or saved config that cannot be used."""


@dataclass
class DataConfig:
    """Input pipeline settings shared by the engine (train/eval/predict)."""

    # Training resize: the shorter side is drawn from ``min_size_train`` ("choice") or
    # uniformly from its [min, max] ("range"), the longer side capped at ``max_size_train``.
    min_size_train: tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    min_size_train_sampling: str = "choice"  # "choice" | "range"
    max_size_train: int = 1333
    # (The test resize belongs to the model: ``model.min_size_test`` / ``model.max_size_test``.)
    hflip_prob: float = 0.5
    # Leave out training images without annotations or with crowd regions only (detectron2's
    # DATALOADER.FILTER_EMPTY_ANNOTATIONS, on in the CenterMask paper presets; SharpMask's
    # window sampler always skips images without objects).
    filter_empty: bool = False
    num_workers: int = 2
    # Split names looked up under a COCO-style root (annotations/instances_<split>*.json).
    train_split: str = "train"
    val_split: str = "val"


@dataclass
class WindowSamplerConfig:
    """DeepMask/SharpMask per-patch training samples (REFERENCE 'Training data'): the window
    sampler of :mod:`maskkit.data.windows`, configured as ``model.sampler`` of a SharpMask config
    (its geometry must agree with the model's window)."""

    window: int = 160
    context: int = 32  # crops are window + context = 192 px
    canonical_size: int = 92  # object's longest side in the window
    scale_jitter: float = 0.25  # octaves, mask samples
    shift_jitter: int = 16  # px in window coordinates, mask samples
    neg_scales: tuple[float, ...] = (-3.0, 2.0)  # octave range of negative windows (0.25 steps)
    neg_reject_dist: int = 48  # px: negatives with a similar-scale object centred this close are rejected
    neg_reject_octaves: float = 1.0  # "similar scale": |log2(object size / canonical)| <= this
    min_area: float = 100.0
    min_side: float = 5.0
    hflip_prob: float = 0.5
    mask_batch_prob: float = 0.5  # P(batch is all mask samples); else all score samples
    # Decoded training images (8-bit, with their targets) kept in memory by the sampler, up to
    # this many MB (0: every sample decodes its image file again). Only the speed changes.
    cache_mb: int = 0


@dataclass
class TrainConfig:
    """Optimisation schedule (SGD + warmup + step/cosine decay), precision and bookkeeping.

    ``lr`` is for ``batch_size`` images per step; the engine applies the linear scaling rule
    (lr proportional to the global batch) when the batch is changed on the command line.
    """

    batch_size: int = 16
    # "sgd" (both papers) | "adamw" (betas (0.9, 0.999); for short from-scratch CPU runs such
    # as the demo, where SGD's few hundred steps leave the mask branch barely trained).
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # Which parameters skip weight decay: "1d" (every 1-D tensor: norms, biases, scales) or
    # "norm" (norm layers only, biases decay: detectron2 / centermask2, the CenterMask presets).
    no_decay: str = "1d"
    max_iter: int = 90000
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    schedule: str = "step"  # "step" | "cosine"
    steps: tuple[int, ...] = (60000, 80000)
    gamma: float = 0.1
    clip_grad_norm: float = 0.0  # 0 disables clipping
    # Wall-clock budget of the training loop in minutes (0 = off; one process only): from the
    # recent step time, the run sets max_iter (never past the configured length) so that it ends
    # in time, and the schedule (cosine / steps) follows the new length (engine/hooks.py TimeBudgetHook).
    time_budget_min: float = 0.0
    # Intra-op threads of the training process on the CPU: 0 = torch's default; N > 0 = N; -1 =
    # torch's default minus data.num_workers (at least 1), so the loader workers run beside the
    # model instead of competing with it for cores (the SharpMask demo: its window sampler on one
    # core, the model on the other; benchmarks/synthetic_protocol.md "The sampler beside the model").
    cpu_threads: int = 0
    accum_steps: int = 1
    amp: str = "none"  # "none" | "bf16" | "fp16"
    seed: int = 0
    log_period: int = 20
    eval_period: int = 5000
    checkpoint_period: int = 5000
    # SharpMask is trained in two stages (1: DeepMask trunk + heads, 2: refinement only).
    stage: int = 1
    init_weights: str = ""  # model file to start from (e.g. the stage-1 result for stage 2)


@dataclass
class EvalConfig:
    """Evaluation settings."""

    batch_size: int = 1
    max_images: int = 0  # 0 = the whole split
    # SharpMask proposals: number of proposals kept per image and AR cut-offs.
    max_dets: tuple[int, ...] = (10, 100, 1000)


@dataclass
class Config:
    """A complete, serialisable description of a model and how to train/evaluate it."""

    model: Any  # CenterMaskConfig | SharpMaskConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = ""  # the preset this config came from


@dataclass
class ModelInfo:
    """Everything a model carries besides its weights, as ``model.info``: the full run config and
    the dataset's label mapping, so predictions come back with the user's category ids and
    names. Set by :func:`maskkit.models.zoo.build` (hence ``create_model``) and by
    :func:`maskkit.checkpoint.load_model`; saved in every model file."""

    config: Config
    class_names: list[str] = field(default_factory=list)  # index = label - 1
    cat_ids: list[int] = field(default_factory=list)  # index = label - 1 -> the dataset's category id

    @property
    def label_to_cat_id(self) -> dict[int, int]:
        """Contiguous label (1..K) -> category id; empty when the model has no dataset mapping."""
        return {i + 1: int(c) for i, c in enumerate(self.cat_ids)}

    def class_name(self, label: int) -> str:
        """Name of ``label`` (its number when the model has no class names)."""
        return self.class_names[label - 1] if 0 < label <= len(self.class_names) else str(label)


# Fields that older model files may still carry and that no longer exist: dropped when read.
_RETIRED_FIELDS = {"data": ("min_size_test", "max_size_test")}  # the test size lives in the model config


def config_to_dict(cfg: Any) -> dict:
    """Dataclass tree -> plain JSON-able dict (tuples become lists)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass, got {type(cfg).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON/parsed value to the annotated field type, or raise ConfigError."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: None is not allowed (expected {tp})")
    tp = inner
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _dataclass_from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        items = [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _dataclass_from_dict(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown field(s) {unknown} (known: {sorted(names)})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict, model_classes: dict[str, type]) -> Config:
    """Inverse of :func:`config_to_dict`; the model part's dataclass is ``model_classes[model['system']]``
    (the models layer owns that table: :data:`maskkit.models.zoo.MODEL_CONFIGS`)."""
    if not isinstance(data, dict) or "model" not in data:
        raise ConfigError("not a maskkit config: no 'model' section")
    model = data["model"]
    system = model.get("system") if isinstance(model, dict) else None
    classes = model_classes
    if system not in classes:
        raise ConfigError(f"model.system must be one of {sorted(classes)}, got {system!r}")
    rest = {k: v for k, v in data.items() if k != "model"}
    for section, names in _RETIRED_FIELDS.items():
        if isinstance(rest.get(section), dict):
            rest[section] = {k: v for k, v in rest[section].items() if k not in names}
    cfg = _dataclass_from_dict(Config, {**rest, "model": None}, "")
    cfg.model = _dataclass_from_dict(classes[system], model, "model")
    return cfg


def config_to_json(cfg: Config) -> str:
    return json.dumps(config_to_dict(cfg), sort_keys=True)


def config_from_json(text: str, model_classes: dict[str, type]) -> Config:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from None
    return config_from_dict(data, model_classes)


# --------------------------------------------------------------------------- overrides


def _parse_literal(text: str) -> Any:
    """``--set`` value text -> Python value: JSON when it parses (numbers, lists, true/false,
    null), a comma-separated list when it has commas, else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if "," in text:
        return [_parse_literal(t.strip()) for t in text.split(",") if t.strip()]
    return text


def apply_overrides(cfg: Any, overrides: list[str] | tuple[str, ...]) -> Any:
    """Apply ``dotted.path=value`` overrides in place (and return ``cfg``).

    Each value is converted to the type of the field it names; unknown paths or values of
    the wrong type raise :class:`ConfigError` naming the override.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.lr=0.005)")
        path, _, text = item.partition("=")
        parts = path.strip().split(".")
        obj = cfg
        for i, part in enumerate(parts):
            if not dataclasses.is_dataclass(obj):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i])} is not a section")
            names = {f.name for f in dataclasses.fields(obj)}
            if part not in names:
                where = ".".join(parts[:i]) or "config"
                raise ConfigError(f"override {item!r}: {where} has no field {part!r} (fields: {sorted(names)})")
            if i == len(parts) - 1:
                tp = typing.get_type_hints(type(obj))[part]
                setattr(obj, part, _coerce(_parse_literal(text.strip()), tp, path))
            else:
                obj = getattr(obj, part)
    return cfg


# --------------------------------------------------------------------------- range checks
MAX_CLASSES = 100_000  # far above any dataset (COCO 80, LVIS 1203); stops 4 GB heads from a typo


def _need(ok: bool, field_name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name} must be {rule}, got {value!r}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_model_config(model: Any, where: str = "model") -> None:
    """Ranges of the model section: ``num_classes`` in 1..MAX_CLASSES, every ``*thresh*`` float
    in [0, 1] and every ``*size*`` / ``*channels*`` / ``*dets*`` integer >= 0, recursively."""
    _need(
        isinstance(model.num_classes, int) and 1 <= model.num_classes <= MAX_CLASSES,
        f"{where}.num_classes",
        model.num_classes,
        f"an integer in 1..{MAX_CLASSES}",
    )
    for f in dataclasses.fields(model):
        v, name = getattr(model, f.name), f"{where}.{f.name}"
        if dataclasses.is_dataclass(v):
            for g in dataclasses.fields(v):
                _check_model_value(f"{name}.{g.name}", getattr(v, g.name))
        else:
            _check_model_value(name, v)


def _check_model_value(name: str, v: Any) -> None:
    last = name.rpartition(".")[2]
    if isinstance(v, float) and "thresh" in last:
        _need(math.isfinite(v) and 0.0 <= v <= 1.0, name, v, "a number in [0, 1]")
    elif isinstance(v, float):
        _need(math.isfinite(v), name, v, "a finite number")
    elif (
        isinstance(v, int) and not isinstance(v, bool) and any(k in last for k in ("size", "channels", "dets", "num_"))
    ):
        _need(v >= 0, name, v, ">= 0")


def validate_config(cfg: Config) -> None:
    """Range-check every section when a config is built (issue #14 item 8): one
    :class:`ConfigError` naming the field, before any layer is built or file read."""
    validate_model_config(cfg.model)
    d, t, e = cfg.data, cfg.train, cfg.eval
    _need(
        len(d.min_size_train) > 0 and all(isinstance(s, int) and s >= 1 for s in d.min_size_train),
        "data.min_size_train",
        list(d.min_size_train),
        "one or more sizes >= 1 px",
    )
    _need(
        d.min_size_train_sampling in ("choice", "range"),
        "data.min_size_train_sampling",
        d.min_size_train_sampling,
        "'choice' or 'range'",
    )
    _need(d.max_size_train >= 1, "data.max_size_train", d.max_size_train, ">= 1")
    _need(_finite(d.hflip_prob) and 0 <= d.hflip_prob <= 1, "data.hflip_prob", d.hflip_prob, "in [0, 1]")
    _need(d.num_workers >= 0, "data.num_workers (--workers)", d.num_workers, ">= 0")
    for name, rule, ok in (
        ("batch_size", ">= 1 (--batch)", t.batch_size >= 1),
        ("optimizer", "'sgd' or 'adamw'", t.optimizer in ("sgd", "adamw")),
        ("lr", "a finite number >= 0", _finite(t.lr) and t.lr >= 0),
        ("momentum", "in [0, 1)", _finite(t.momentum) and 0 <= t.momentum < 1),
        ("weight_decay", "a finite number >= 0", _finite(t.weight_decay) and t.weight_decay >= 0),
        ("max_iter", ">= 0 (0: set up only, API)", t.max_iter >= 0),
        ("warmup_iters", ">= 0", t.warmup_iters >= 0),
        ("warmup_factor", "in (0, 1]", _finite(t.warmup_factor) and 0 < t.warmup_factor <= 1),
        ("schedule", "'step' or 'cosine'", t.schedule in ("step", "cosine")),
        ("steps", "steps >= 0", all(s >= 0 for s in t.steps)),
        ("gamma", "a finite number > 0", _finite(t.gamma) and t.gamma > 0),
        ("clip_grad_norm", "a finite number >= 0 (0 = off)", _finite(t.clip_grad_norm) and t.clip_grad_norm >= 0),
        ("time_budget_min", "a finite number >= 0 (0 = off)", _finite(t.time_budget_min) and t.time_budget_min >= 0),
        ("cpu_threads", "an integer >= -1 (0 = default)", isinstance(t.cpu_threads, int) and t.cpu_threads >= -1),
        ("accum_steps", ">= 1", t.accum_steps >= 1),
        ("amp", "none, bf16 or fp16", t.amp in ("", "none", "bf16", "fp16")),
        ("seed", "in 0..2**32-1", 0 <= t.seed < 2**32),
        ("log_period", ">= 1", t.log_period >= 1),
        ("eval_period", ">= 0 (0 = only at the end)", t.eval_period >= 0),
        ("checkpoint_period", ">= 1", t.checkpoint_period >= 1),
        ("stage", "1 or 2", t.stage in (1, 2)),
    ):
        _need(ok, f"train.{name}", getattr(t, name), rule)
    _need(e.batch_size >= 1, "eval.batch_size", e.batch_size, ">= 1")
    _need(e.max_images >= 0, "eval.max_images", e.max_images, ">= 0 (0 = all)")
    _need(len(e.max_dets) > 0 and all(k >= 1 for k in e.max_dets), "eval.max_dets", list(e.max_dets), "counts >= 1")

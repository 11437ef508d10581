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
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union

from maskkit.errors import MaskkitError

__all__ = [
    "Config",
    "DataConfig",
    "TrainConfig",
    "EvalConfig",
    "WindowSamplerConfig",
    "ConfigError",
    "ModelInfo",
    "InputConvention",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "config_to_json",
    "config_from_json",
    "validate_config",
    "validate_model_config",
    "Rule",
    "ruled",
    "section",
    "at_least",
    "within",
    "MAX_CLASSES",
]


class ConfigError(MaskkitError, ValueError):
    """A configuration value, override or saved config that cannot be used."""


# --------------------------------------------------------------------------- declared ranges
MAX_CLASSES = 100_000  # far above any dataset (COCO 80, LVIS 1203); stops 4 GB heads from a typo


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class Rule:
    """The legal values of one field, declared with the field (``ruled(default, rule)``) and
    checked once, when a config is built or read back (:func:`validate_config`): ``ok(value)``,
    and ``text`` for the error line (``<field> must be <text>, got <value>``). Choice fields are
    typed ``Literal[...]`` instead and checked as they are parsed."""

    ok: Callable[[Any], bool]
    text: str


_RULE = "maskkit_rule"


def section(name: str):
    """Class decorator: a config dataclass for the section ``name`` (``"train"``,
    ``"model.fcos"``, ...) whose choices and ranges are checked when it is constructed, so a
    ``TrainConfig(optimizer="lbfgs")`` fails where it is written, naming ``train.optimizer``.
    (A value assigned later in code is checked by :func:`validate_config`.)"""

    def wrap(cls: type) -> type:
        def __post_init__(self) -> None:
            _check_fields(self, name, nested=False)

        cls.__post_init__ = __post_init__
        return dataclass(cls)

    return wrap


def ruled(default: Any, rule: Rule) -> Any:
    """A dataclass field with ``default`` whose values must satisfy ``rule``."""
    return field(default=default, metadata={_RULE: rule})


def at_least(low: float, text: str | None = None, *, number: bool = False) -> Rule:
    """``value >= low`` (a finite number); ``number=True`` words it "a finite number >= low"."""
    return Rule(lambda v: _finite(v) and v >= low, text or (f"a finite number >= {low:g}" if number else f">= {low:g}"))


def within(low: float, high: float, text: str | None = None, *, high_open: bool = False) -> Rule:
    """``low <= value <= high`` (``< high`` with ``high_open``), a finite number."""
    return Rule(
        lambda v: _finite(v) and low <= v and (v < high if high_open else v <= high),
        text or f"in [{low:g}, {high:g}{')' if high_open else ']'}",
    )


def each(rule: Rule, text: str) -> Rule:
    """A non-empty sequence whose every element satisfies ``rule``."""
    return Rule(lambda v: len(v) > 0 and all(rule.ok(x) for x in v), text)


PROBABILITY = within(0.0, 1.0, "a number in [0, 1]")
NON_NEGATIVE = at_least(0)


@section("data")
class DataConfig:
    """Input pipeline settings shared by the engine (train/eval/predict)."""

    # Training resize: the shorter side is drawn from ``min_size_train`` ("choice") or
    # uniformly from its [min, max] ("range"), the longer side capped at ``max_size_train``.
    min_size_train: tuple[int, ...] = ruled(
        (640, 672, 704, 736, 768, 800),
        each(Rule(lambda v: isinstance(v, int) and v >= 1, ""), "one or more sizes >= 1 px"),
    )
    min_size_train_sampling: Literal["choice", "range"] = "choice"
    max_size_train: int = ruled(1333, at_least(1))
    # (The test resize belongs to the model: ``model.min_size_test`` / ``model.max_size_test``.)
    hflip_prob: float = ruled(0.5, within(0, 1))
    # Leave out training images without annotations or with crowd regions only (detectron2's
    # DATALOADER.FILTER_EMPTY_ANNOTATIONS, on in the CenterMask paper presets; SharpMask's
    # window sampler always skips images without objects).
    filter_empty: bool = False
    num_workers: int = ruled(2, at_least(0, ">= 0 (--workers)"))
    # Split names looked up under a COCO-style root (annotations/instances_<split>*.json).
    train_split: str = "train"
    val_split: str = "val"


@section("model.sampler")
class WindowSamplerConfig:
    """DeepMask/SharpMask per-patch training samples (REFERENCE 'Training data'): the window
    sampler of :mod:`maskkit.data.windows`, configured as ``model.sampler`` of a SharpMask config
    (its geometry must agree with the model's window)."""

    window: int = 160
    context: int = 32  # crops are window + context = 192 px
    canonical_size: int = ruled(92, NON_NEGATIVE)  # object's longest side in the window
    scale_jitter: float = 0.25  # octaves, mask samples
    shift_jitter: int = 16  # px in window coordinates, mask samples
    neg_scales: tuple[float, ...] = (-3.0, 2.0)  # octave range of negative windows (0.25 steps)
    neg_reject_dist: int = 48  # px: negatives with a similar-scale object centred this close are rejected
    neg_reject_octaves: float = 1.0  # "similar scale": |log2(object size / canonical)| <= this
    min_area: float = 100.0
    min_side: float = 5.0
    hflip_prob: float = ruled(0.5, PROBABILITY)
    mask_batch_prob: float = ruled(0.5, PROBABILITY)  # P(batch is all mask samples); else all score samples
    # Decoded training images (8-bit, with their targets) kept in memory by the sampler, up to
    # this many MB (0: every sample decodes its image file again). Only the speed changes.
    cache_mb: int = 0


@section("train")
class TrainConfig:
    """Optimisation schedule (SGD + warmup + step/cosine decay), precision and bookkeeping.

    ``lr`` is for ``batch_size`` images per step; the engine applies the linear scaling rule
    (lr proportional to the global batch) when the batch is changed on the command line.
    """

    batch_size: int = ruled(16, at_least(1, ">= 1 (--batch)"))
    # "sgd" (both papers) | "adamw" (betas (0.9, 0.999); for short from-scratch CPU runs such
    # as the demo, where SGD's few hundred steps leave the mask branch barely trained).
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = ruled(0.01, at_least(0, number=True))
    momentum: float = ruled(0.9, within(0, 1, high_open=True))
    weight_decay: float = ruled(1e-4, at_least(0, number=True))
    # Which parameters skip weight decay: "1d" (every 1-D tensor: norms, biases, scales) or
    # "norm" (norm layers only, biases decay: detectron2 / centermask2, the CenterMask presets).
    no_decay: Literal["1d", "norm"] = "1d"
    max_iter: int = ruled(90000, at_least(0, ">= 0 (0: set up only, API)"))
    warmup_iters: int = ruled(1000, NON_NEGATIVE)
    warmup_factor: float = ruled(0.001, Rule(lambda v: _finite(v) and 0 < v <= 1, "in (0, 1]"))
    schedule: Literal["step", "cosine"] = "step"
    steps: tuple[int, ...] = ruled((60000, 80000), Rule(lambda v: all(x >= 0 for x in v), "steps >= 0"))
    gamma: float = ruled(0.1, Rule(lambda v: _finite(v) and v > 0, "a finite number > 0"))
    clip_grad_norm: float = ruled(0.0, at_least(0, "a finite number >= 0 (0 = off)"))
    # Wall-clock budget of the training loop in minutes (0 = off; one process only): from the
    # recent step time, the run sets max_iter (never past the configured length) so that it ends
    # in time, and the schedule (cosine / steps) follows the new length (engine/hooks.py TimeBudgetHook).
    time_budget_min: float = ruled(0.0, at_least(0, "a finite number >= 0 (0 = off)"))
    # Intra-op threads of the training process on the CPU: 0 = torch's default; N > 0 = N; -1 =
    # torch's default minus data.num_workers (at least 1), so the loader workers run beside the
    # model instead of competing with it for cores (the SharpMask demo: its window sampler on one
    # core, the model on the other; benchmarks/synthetic_protocol.md "The sampler beside the model").
    cpu_threads: int = ruled(0, Rule(lambda v: isinstance(v, int) and v >= -1, "an integer >= -1 (0 = default)"))
    accum_steps: int = ruled(1, at_least(1))
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = ruled(0, Rule(lambda v: 0 <= v < 2**32, "in 0..2**32-1"))
    log_period: int = ruled(20, at_least(1))
    eval_period: int = ruled(5000, at_least(0, ">= 0 (0 = only at the end)"))
    checkpoint_period: int = ruled(5000, at_least(1))
    # SharpMask is trained in two stages (1: DeepMask trunk + heads, 2: refinement only).
    stage: Literal[1, 2] = 1
    init_weights: str = ""  # model file to start from (e.g. the stage-1 result for stage 2)


@section("eval")
class EvalConfig:
    """Evaluation settings."""

    batch_size: int = ruled(1, at_least(1))
    max_images: int = ruled(0, at_least(0, ">= 0 (0 = all)"))  # 0 = the whole split
    # SharpMask proposals: number of proposals kept per image and AR cut-offs.
    max_dets: tuple[int, ...] = ruled((10, 100, 1000), each(at_least(1), "counts >= 1"))


@dataclass
class Config:
    """A complete, serialisable description of a model and how to train/evaluate it."""

    model: Any  # CenterMaskConfig | SharpMaskConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = ""  # the preset this config came from


@dataclass(frozen=True)
class InputConvention:
    """How a model's weights expect their input, recorded with the weights (model files, ONNX
    metadata) and in :class:`ModelInfo`: ``format`` "RGB" (float 0..1) or "BGR255" (detectron2's
    BGR 0..255), normalised with ``pixel_mean`` / ``pixel_std`` in that scale and channel order.
    A model built from its config alone uses the config's (``model.input_format``,
    ``model.pixel_mean``, ``model.pixel_std``); ImageNet trunk files, fine-tuning starts and
    converted checkpoints bring their own, which the model then uses (the config keeps what was
    configured)."""

    format: Literal["RGB", "BGR255"] = "RGB"
    pixel_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @classmethod
    def of(cls, model_cfg: Any) -> "InputConvention":
        """The convention a model config states (SharpMask configs are RGB)."""
        return cls(
            getattr(model_cfg, "input_format", "RGB"),
            tuple(float(v) for v in model_cfg.pixel_mean),
            tuple(float(v) for v in model_cfg.pixel_std),
        )

    def to_json(self) -> str:
        return json.dumps(
            {"format": self.format, "pixel_mean": list(self.pixel_mean), "pixel_std": list(self.pixel_std)}
        )

    @classmethod
    def from_json(cls, text: str) -> "InputConvention":
        """Inverse of :meth:`to_json`; :class:`ConfigError` for anything else."""
        try:
            d = json.loads(text)
            conv = cls(
                str(d["format"]), tuple(float(v) for v in d["pixel_mean"]), tuple(float(v) for v in d["pixel_std"])
            )
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"input convention is not readable ({type(e).__name__}: {e})") from None
        if conv.format not in ("RGB", "BGR255") or len(conv.pixel_mean) != 3 or len(conv.pixel_std) != 3:
            raise ConfigError(f"input convention {text[:120]!r} is not RGB/BGR255 with 3 means and 3 stds")
        if not all(math.isfinite(v) for v in conv.pixel_mean) or not all(
            math.isfinite(v) and v > 0 for v in conv.pixel_std
        ):
            raise ConfigError(f"input convention {text[:120]!r}: means must be finite and stds > 0")
        return conv


@dataclass
class ModelInfo:
    """Everything a model carries besides its weights, as ``model.info``: the full run config,
    the dataset's label mapping (so predictions come back with the user's category ids and
    names) and the weights' input convention. Set by :func:`maskkit.models.zoo.build` (hence
    ``create_model``) and by :func:`maskkit.checkpoint.load_model`; saved in every model file."""

    config: Config
    class_names: list[str] = field(default_factory=list)  # index = label - 1
    cat_ids: list[int] = field(default_factory=list)  # index = label - 1 -> the dataset's category id
    input: InputConvention | None = None  # None: the config's (InputConvention.of(config.model))

    def __post_init__(self) -> None:
        if self.input is None:
            self.input = InputConvention.of(self.config.model)

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
    allowed = _choices(tp)
    if allowed is not None:  # a choice field: parsed as its values' type, then checked at once
        try:
            parsed = _coerce(value, type(allowed[0]), where)
        except ConfigError:
            parsed = None
        if parsed not in allowed:
            raise ConfigError(f"{where} must be {_choice_text(allowed)}, got {value!r}")
        return parsed
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
    hints = _hints(cls)
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


# --------------------------------------------------------------------------- validation


def _need(ok: bool, field_name: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name} must be {rule}, got {value!r}")


def _choices(tp: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` annotation (also inside ``Optional``), else None."""
    _, tp = _is_optional(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def _choice_text(allowed: tuple) -> str:
    return "one of " + ", ".join(repr(a) for a in allowed)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _check_fields(obj: Any, where: str, nested: bool = True) -> None:
    """Every field of the dataclass ``obj``: ``Literal`` choices, declared :class:`Rule`
    ranges, and any other float finite; nested sections too with ``nested``."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        v, name = getattr(obj, f.name), f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(v):
            if nested:
                _check_fields(v, name)
            continue
        allowed = _choices(hints[f.name])
        rule = f.metadata.get(_RULE)
        if allowed is not None:
            _need(v in allowed, name, v, _choice_text(allowed))
        elif rule is not None:
            _need(rule.ok(v), name, list(v) if isinstance(v, tuple) else v, rule.text)
        elif isinstance(v, float):
            _need(math.isfinite(v), name, v, "a finite number")


def validate_model_config(model: Any, where: str = "model") -> None:
    """The model section's declared ranges and choices (``num_classes`` in 1..MAX_CLASSES, ...)."""
    _check_fields(model, where)


def validate_config(cfg: Config) -> None:
    """Check every section when a config is built or read: one :class:`ConfigError` naming the
    field, before any layer is built or file read. The legal values are declared with the
    fields (``Literal`` choices, :func:`ruled` ranges)."""
    validate_model_config(cfg.model)
    for section in ("data", "train", "eval"):
        _check_fields(getattr(cfg, section), section)

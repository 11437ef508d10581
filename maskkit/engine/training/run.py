"""``maskkit train``: a preset and a dataset on disk -> a run folder, through :func:`fit`.

The run's config is built once (:func:`build_config`: the preset, ``--set`` overrides, the
``--batch`` / ``--iters`` / ``--workers`` flags with the linear scaling rule), its datasets are
read with it (:func:`load_datasets`), and the dataset's class count completes it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from maskkit.config import ConfigError, apply_overrides, validate_config
from maskkit.data.coco import CocoDataset, resolve_data
from maskkit.engine.distributed import init_distributed, resolve_device
from maskkit.engine.systems import system_of
from maskkit.engine.training.loop import fit
from maskkit.engine.training.rng import seed_everything
from maskkit.engine.training.schedule import scale_lr
from maskkit.errors import MaskkitError
from maskkit.evaluation import write_metrics
from maskkit.models.zoo import build, preset_config

__all__ = ["build_config", "load_datasets", "train"]


def _overrides_field(overrides: list[str], key: str) -> bool:
    return any(o.strip().startswith(f"{key}=") for o in overrides)


def build_config(
    model: str,
    overrides: list[str] | tuple[str, ...] = (),
    batch: int | None = None,
    iters: int | None = None,
    workers: int | None = None,
    num_classes: int | None = None,
):
    """The run's config: preset ``model`` + ``overrides``, with ``batch`` applying the linear
    scaling rule to the preset's ``train.lr`` (unless ``train.lr`` is overridden), ``iters`` and
    ``workers``; checked (:func:`maskkit.config.validate_config`). ``num_classes`` (the dataset's)
    gives K unless ``model.num_classes`` is overridden."""
    for flag, value, low in (("--batch", batch, 1), ("--iters", iters, 1), ("--workers", workers, 0)):
        if value is not None and value < low:
            raise MaskkitError(f"{flag} must be >= {low}, got {value}")
    overrides = list(overrides)
    cfg = preset_config(model)
    base_lr, base_batch = cfg.train.lr, cfg.train.batch_size
    apply_overrides(cfg, overrides)
    set_num_classes(cfg, num_classes, overrides)
    if batch is not None:
        cfg.train.batch_size = batch
        if not _overrides_field(overrides, "train.lr"):
            cfg.train.lr = scale_lr(base_lr, base_batch, batch)
    if iters is not None:
        cfg.train.max_iter = iters
    if workers is not None:
        cfg.data.num_workers = workers
    validate_config(cfg)
    if cfg.train.max_iter < 1:  # a run of 0 steps would end claiming a model file it never wrote
        raise ConfigError(f"train.max_iter must be >= 1 (--iters) to train, got {cfg.train.max_iter}")
    return cfg


def set_num_classes(cfg, num_classes: int | None, overrides: list[str]) -> None:
    """K from the dataset (``num_classes``; None keeps the config's), unless ``overrides`` set
    ``model.num_classes`` themselves."""
    if num_classes is None or _overrides_field(overrides, "model.num_classes"):
        return
    if num_classes < 1:
        raise MaskkitError(f"num_classes must be >= 1, got {num_classes}")
    cfg.model.num_classes = int(num_classes)
    validate_config(cfg)


def load_datasets(
    cfg, data: str | Path | None = None, ann: str | Path | None = None, images: str | Path | None = None
) -> tuple[Any, Any]:
    """(training set as the config's system trains on it, validation set without transforms or
    None) for ``cfg.data``.

    ``data`` (a COCO-style root) gives both splits (``cfg.data.train_split`` / ``val_split``);
    ``ann`` + ``images`` give the training set only (no periodic evaluation)."""
    explicit = ann is not None or images is not None
    train_set = system_of(cfg).training_set(*resolve_data(data, cfg.data.train_split, ann, images), cfg)
    val_set = None
    if not explicit:
        try:
            val_set = CocoDataset(*resolve_data(data, cfg.data.val_split))
        except MaskkitError as e:
            print(f"maskkit: no validation split, training without evaluation ({e})", file=sys.stderr)
    return train_set, val_set


def train(
    model: str,
    *,
    data: str | Path | None = None,
    ann: str | Path | None = None,
    images: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    device: str | None = "auto",
    overrides: list[str] = (),
    batch: int | None = None,
    iters: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """``maskkit train``: preset ``model`` on a dataset on disk, into the run folder ``out``
    (default ``runs/<model>``); the summary of :func:`fit` plus ``out``. Under torchrun it joins
    the process group first. Writes ``metrics.json`` of the final evaluation (rank 0)."""
    overrides = list(overrides)
    info = init_distributed(str(resolve_device(device)))
    device = resolve_device(device)
    try:
        cfg = build_config(model, overrides, batch, iters, workers)
        system = system_of(cfg)
        train_set, val_set = load_datasets(cfg, data, ann, images)
        set_num_classes(cfg, system.num_classes(train_set), overrides)
        names, cats = system.label_mapping(train_set)
        out = Path(out or Path("runs") / model)
        seed_everything(cfg.train.seed)
        net = build(cfg, names, cats, backbone_weights=not resume)  # a resumed run reads its own files
        if info.main:
            print(
                f"maskkit: training {model} ({cfg.model.num_classes} classes, {len(train_set)} images, "
                f"global batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, {cfg.train.max_iter} steps, "
                f"{info.world_size} process(es) on {device}) -> {out}",
                file=sys.stderr,
            )
        summary = fit(
            cfg,
            net,
            train_set,
            out,
            val_set=val_set,
            device=device,
            resume=resume,
            progress=progress,
            overwrite=overwrite,
        )
    finally:
        if info.distributed:
            torch.distributed.destroy_process_group()
    if info.main and summary["last_eval"]:
        write_metrics(summary["last_eval"], out)
    return {**summary, "out": str(out), "main": info.main}

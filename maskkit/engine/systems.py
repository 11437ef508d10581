"""The per-system seam of the engine: one record per system behind the :class:`System` protocol,
everything the engine needs to know about CenterMask or SharpMask beyond ``model(images,
targets)``, so the engine itself never asks "which system?".

A system record holds the model layer's record (``spec``: config class, model class, presets,
ImageNet weight loader; :data:`maskkit.models.zoo.SPECS`, which must sit below the model files
that rebuild a model without the engine) and adds what only the engine needs: its training data
pipeline (dataset + batching), its label mapping, how its predictions are scored, how its
overlays are picked, how its model is prepared for a training stage and which ONNX graph
exports it. Adding a third system means one more ``ModelSpec`` in ``models/zoo.py`` and one more
class here, added to :data:`SYSTEMS` (plus its model and presets under ``models/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Protocol

from torch import nn

from maskkit.config import EvalConfig
from maskkit.data.coco import CocoDataset
from maskkit.data.loader import image_batches, window_batches
from maskkit.data.transforms import build_train_transforms
from maskkit.errors import MaskkitError
from maskkit.evaluation.coco import evaluate_coco, evaluate_proposals
from maskkit.models.zoo import SPECS, ModelSpec
from maskkit.structures import select_instances

__all__ = ["System", "CenterMaskSystem", "SharpMaskSystem", "SYSTEMS", "system_of"]


class System(Protocol):
    """What the engine asks of a system (one record per system in :data:`SYSTEMS`)."""

    name: str  # the model config's ``system``
    spec: ModelSpec  # the model layer's record: config class, model class, presets, weight loader
    class_agnostic: bool  # predictions have no classes (proposals)
    benchmarked: bool  # ``maskkit bench`` times its presets beside a detection peer

    def training_set(self, ann: Path, images: Path, cfg) -> CocoDataset: ...

    def num_classes(self, dataset) -> int | None: ...

    def label_mapping(self, dataset) -> tuple[list[str], list[int]]: ...

    def batches(self, dataset, cfg, rank: int, world_size: int, start_step: int, **kw) -> Iterator: ...

    def prepare(self, model: nn.Module, cfg) -> None: ...

    def results_mapping(self, label_to_cat_id: dict[int, int] | None) -> dict[int, int] | None: ...

    def score(self, coco, results: list[dict], cfg, image_ids: list[int]) -> dict[str, float]: ...

    def check_classes(self, cat_ids: list[int], dataset, weights) -> None: ...

    def for_overlay(self, pred: dict, score_thresh: float) -> tuple[dict, float]: ...

    def describe_input(self, model_cfg) -> str: ...

    def limit_detections(self, model: nn.Module, limit: int) -> int: ...

    def export_graph(self, model: nn.Module): ...


def _graph_model(system: System, model: nn.Module) -> nn.Module:
    """``model`` when it is the system's network (what an export graph traces), else one line."""
    if not isinstance(model, system.spec.model_class):
        raise MaskkitError(
            f"export: no ONNX graph for {type(model).__name__}; export takes CenterMask and "
            "DeepMask/SharpMask model files"
        )
    return model


class CenterMaskSystem:
    """Instance segmentation with the dataset's classes, scored by COCO box and mask AP."""

    name = "centermask"
    spec = SPECS["centermask"]
    class_agnostic = False
    benchmarked = True

    def training_set(self, ann: Path, images: Path, cfg) -> CocoDataset:
        """The training split with the config's train transforms (resize jitter, flips); with
        ``data.filter_empty``, without images that have no (non-crowd) annotation."""
        return CocoDataset(
            ann,
            images,
            transforms=build_train_transforms(cfg.data),
            skip_crowd_only=cfg.data.filter_empty,
            remove_images_without_annotations=cfg.data.filter_empty,
        )

    def num_classes(self, dataset) -> int | None:
        """K for the model: the dataset's category count."""
        return len(dataset.class_names)

    def label_mapping(self, dataset) -> tuple[list[str], list[int]]:
        """(class names, category ids) saved with the model."""
        return list(dataset.class_names), list(dataset.cat_ids)

    def batches(self, dataset, cfg, rank: int, world_size: int, start_step: int, **kw) -> Iterator:
        """Infinite stream of (images, targets) micro-batches: this rank's shard of each step."""
        return image_batches(dataset, cfg, rank, world_size, start_step)

    def prepare(self, model: nn.Module, cfg) -> None:
        """Nothing to switch: one training stage."""

    def results_mapping(self, label_to_cat_id: dict[int, int] | None) -> dict[int, int] | None:
        """Label -> category id used when writing COCO results."""
        return label_to_cat_id

    def score(self, coco, results: list[dict], cfg, image_ids: list[int]) -> dict[str, float]:
        """COCO box and mask AP (+ per-category AP)."""
        return evaluate_coco(coco, results, image_ids=image_ids)

    def check_classes(self, cat_ids: list[int], dataset, weights) -> None:
        """Evaluation uses the model's label -> category mapping; the dataset must have the same
        categories (else every prediction would be scored against the wrong class)."""
        if cat_ids and sorted(cat_ids) != sorted(dataset.cat_ids):
            raise MaskkitError(
                f"{weights}: the model was trained on category ids {sorted(cat_ids)[:10]}... "
                f"but {dataset.ann_file} has {sorted(dataset.cat_ids)[:10]}..."
            )

    def for_overlay(self, pred: dict, score_thresh: float) -> tuple[dict, float]:
        """(prediction, threshold) to draw: instances above the threshold."""
        return pred, score_thresh

    def describe_input(self, model_cfg) -> str:
        """The model's test-time sizing, in words."""
        return f"shorter side resized to {model_cfg.min_size_test} px, longer side at most {model_cfg.max_size_test} px"

    def limit_detections(self, model: nn.Module, limit: int) -> int:
        """Detections per image the model returns (CenterMask: ``fcos.detections_per_image``,
        left as configured)."""
        return int(model.cfg.fcos.detections_per_image)

    def export_graph(self, model: nn.Module):
        """The one-graph pipeline (:func:`maskkit.export.centermask.centermask_graph`)."""
        from maskkit.export.centermask import centermask_graph

        return centermask_graph(_graph_model(self, model))


class SharpMaskSystem:
    """Class-agnostic object proposals (DeepMask / SharpMask), scored by proposal AR@k."""

    name = "sharpmask"
    spec = SPECS["sharpmask"]
    class_agnostic = True
    benchmarked = False

    def training_set(self, ann: Path, images: Path, cfg) -> CocoDataset:
        """The training split without transforms: the window sampler brings its own scale
        jitter and flips (SharpMask Sec. 3 / REFERENCE "Training data")."""
        return CocoDataset(ann, images, remove_images_without_annotations=True)

    def num_classes(self, dataset) -> int | None:
        """Proposals are class-agnostic: the preset's single "object" class."""
        return None

    def label_mapping(self, dataset) -> tuple[list[str], list[int]]:
        return ["object"], [1]

    def batches(self, dataset, cfg, rank: int, world_size: int, start_step: int, *, pixel_mean=None, **kw) -> Iterator:
        """Infinite stream of window micro-batches: this rank's shard of each step; windows past
        the image are filled with ``pixel_mean`` (the model's input convention's)."""
        return window_batches(dataset, cfg, rank, world_size, start_step, pixel_mean)

    def prepare(self, model: nn.Module, cfg) -> None:
        """Stage 1 trains the DeepMask trunk and heads; stage 2 only the refinement modules."""
        model.set_stage(int(cfg.train.stage))

    def results_mapping(self, label_to_cat_id: dict[int, int] | None) -> dict[int, int] | None:
        """Category ids are ignored when scoring proposals: write the labels as they are."""
        return None

    def score(self, coco, results: list[dict], cfg, image_ids: list[int]) -> dict[str, float]:
        """Class-agnostic AR at the config's proposal counts (SharpMask Sec. 5)."""
        max_dets = tuple((cfg.eval if cfg is not None else EvalConfig()).max_dets)
        return evaluate_proposals(coco, results, max_dets=max_dets, image_ids=image_ids)

    def check_classes(self, cat_ids: list[int], dataset, weights) -> None:
        """Any dataset: proposals have no classes."""

    def for_overlay(self, pred: dict, score_thresh: float, top: int = 10) -> tuple[dict, float]:
        """The ``top`` best proposals, whatever their score."""
        return select_instances(pred, pred["scores"].argsort(descending=True)[:top]), 0.0

    def describe_input(self, model_cfg) -> str:
        """The model's test-time sizing, in words (SharpMask Sec. 3.3: windows over a scale pyramid)."""
        scales = ", ".join(f"{s:g}" for s in model_cfg.scales)
        return f"any size: {model_cfg.window} px windows slid at stride {model_cfg.stride} over scales 2^({scales})"

    def limit_detections(self, model: nn.Module, limit: int) -> int:
        """Cap the proposals per image (``top_n``) at ``limit`` (full-image masks for 1000
        proposals take gigabytes); returns the cap in force."""
        model.cfg.top_n = min(int(model.cfg.top_n), int(limit))
        return int(model.cfg.top_n)

    def export_graph(self, model: nn.Module):
        """The proposal graph over the scale pyramid (:func:`maskkit.export.sharpmask.sharpmask_graph`)."""
        from maskkit.export.sharpmask import sharpmask_graph

        return sharpmask_graph(_graph_model(self, model))


SYSTEMS: dict[str, System] = {s.name: s for s in (CenterMaskSystem(), SharpMaskSystem())}


def system_of(obj: Any) -> System:
    """The system record of a full config (``cfg.model.system``), of a model config, or of a
    module: its ``model.info``'s config; a module not built by maskkit (no ``info``) is the system
    whose model class it is, else scored as an instance segmenter (CenterMask: COCO box and mask
    AP, which any detector's predictions can be)."""
    if isinstance(obj, nn.Module):
        info = getattr(obj, "info", None)
        if info is not None:
            return system_of(info.config)
        found = [s for s in SYSTEMS.values() if isinstance(obj, s.spec.model_class)]
        return found[0] if found else SYSTEMS["centermask"]
    name = getattr(getattr(obj, "model", obj), "system", None)
    if name not in SYSTEMS:
        raise MaskkitError(f"unknown model system {name!r}; known: {', '.join(SYSTEMS)}")
    return SYSTEMS[name]

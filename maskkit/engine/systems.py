"""One small object per system: everything the engine needs to know about CenterMask or
SharpMask beyond ``model(images, targets)``, so the engine itself never asks "which system?".

A system owns its training data pipeline (dataset + batching), its label mapping, how its
predictions are scored, how its overlays are picked and how its model is prepared for a
training stage. Adding a third system means writing one more class here with the same
methods and adding it to :data:`SYSTEMS` (plus its model and presets under ``models/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from torch import nn

from maskkit.config import EvalConfig
from maskkit.data.coco import CocoDataset
from maskkit.data.loader import image_batches, window_batches
from maskkit.data.transforms import build_train_transforms
from maskkit.errors import MaskkitError
from maskkit.evaluation.coco import evaluate_coco, evaluate_proposals
from maskkit.structures import select_instances

__all__ = ["CenterMaskSystem", "SharpMaskSystem", "SYSTEMS", "system_of"]


class CenterMaskSystem:
    """Instance segmentation with the dataset's classes, scored by COCO box and mask AP."""

    name = "centermask"
    class_agnostic = False

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

    def batches(self, dataset, cfg, rank: int, world_size: int, start_step: int) -> Iterator:
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


class SharpMaskSystem:
    """Class-agnostic object proposals (DeepMask / SharpMask), scored by proposal AR@k."""

    name = "sharpmask"
    class_agnostic = True

    def training_set(self, ann: Path, images: Path, cfg) -> CocoDataset:
        """The training split without transforms: the window sampler brings its own scale
        jitter and flips (SharpMask Sec. 3 / REFERENCE "Training data")."""
        return CocoDataset(ann, images, remove_images_without_annotations=True)

    def num_classes(self, dataset) -> int | None:
        """Proposals are class-agnostic: the preset's single "object" class."""
        return None

    def label_mapping(self, dataset) -> tuple[list[str], list[int]]:
        return ["object"], [1]

    def batches(self, dataset, cfg, rank: int, world_size: int, start_step: int) -> Iterator:
        """Infinite stream of window micro-batches: this rank's shard of each step."""
        return window_batches(dataset, cfg, rank, world_size, start_step)

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


SYSTEMS = {s.name: s for s in (CenterMaskSystem(), SharpMaskSystem())}


def system_of(cfg) -> CenterMaskSystem | SharpMaskSystem:
    """The system object of a full config (``cfg.model.system``)."""
    name = cfg.model.system
    if name not in SYSTEMS:
        raise MaskkitError(f"unknown model system {name!r}; known: {', '.join(SYSTEMS)}")
    return SYSTEMS[name]

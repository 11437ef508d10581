"""Scoring: results format (predictions <-> COCO results JSON), COCO AP and proposal AR,
report tables and ``metrics.json``. It runs nothing; it scores (the engine runs models)."""

from maskkit.evaluation.coco import (
    IOU_TYPES,
    STAT_NAMES,
    evaluate_coco,
    evaluate_proposals,
    load_coco_gt,
    proposal_recall_curve,
)
from maskkit.evaluation.report import format_table, primary_metric, write_metrics
from maskkit.evaluation.results import check_results, load_results, predictions_to_coco_results, write_results

__all__ = [
    "IOU_TYPES",
    "STAT_NAMES",
    "evaluate_coco",
    "evaluate_proposals",
    "load_coco_gt",
    "proposal_recall_curve",
    "format_table",
    "primary_metric",
    "write_metrics",
    "check_results",
    "load_results",
    "predictions_to_coco_results",
    "write_results",
]

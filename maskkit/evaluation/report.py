"""Reports: the headline metric, markdown tables and ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from maskkit.atomic import atomic_write_text

__all__ = ["primary_metric", "format_table", "write_metrics"]


def primary_metric(metrics: dict) -> tuple[str, float]:
    """The figure that decides ``model_best``: mask AP, else box AP, else proposal AR@100."""
    for key in ("segm/AP", "bbox/AP", "proposals/segm/AR@100", "proposals/bbox/AR@100"):
        v = metrics.get(key)
        if v is not None and v == v:
            return key, float(v)
    return "none", float("-inf")


# --------------------------------------------------------------------------- output
def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.center(w) for h, w in zip(header, widths)) + " |",
        "|" + "|".join(":" + "-" * w + ":" for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(c.center(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def format_table(metrics: dict[str, float]) -> str:
    """Markdown tables of ``metrics`` in percent (detectron2's layout): one row of summary
    figures per group (``bbox``, ``segm``, ``proposals/segm``, ...), then per-category AP in
    three column pairs. Undefined (nan) figures print as ``-``."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        group, _, name = key.rpartition("/")
        groups.setdefault(group, {})[name] = value
    blocks = []
    for group, figures in groups.items():
        summary = {k: v for k, v in figures.items() if not k.startswith("AP-")}
        per_cat = {k[3:]: v for k, v in figures.items() if k.startswith("AP-")}
        if summary:
            blocks.append(
                f"Evaluation results for {group or 'metrics'} (%):\n"
                + _markdown(list(summary), [[_fmt(v) for v in summary.values()]])
            )
        if per_cat:
            items = [(name, _fmt(v)) for name, v in per_cat.items()]
            cols = 3
            rows = [sum((list(p) for p in items[i : i + cols]), []) for i in range(0, len(items), cols)]
            rows[-1] += ["", ""] * (cols - len(rows[-1]) // 2)
            n = min(cols, len(items))
            header = ["category", "AP"] * n
            rows = [r[: 2 * n] for r in rows]
            blocks.append(f"Per-category {group} AP (%):\n" + _markdown(header, rows))
    return "\n\n".join(blocks)


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no nan: undefined figures are null
    return v


def write_metrics(metrics: dict, out_dir: str | os.PathLike) -> Path:
    """``out_dir/metrics.json``: the flat dict, keys sorted, indented; nan -> null. Atomic."""
    flat = {str(k): _json_value(v) for k, v in metrics.items()}
    return atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(flat, indent=2, sort_keys=True) + "\n")

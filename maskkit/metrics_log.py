"""``metrics.jsonl``: the training log, written by the engine's metrics hook and read by the
curve plot (:func:`maskkit.viz.plot_metrics`) — one module owns the format.

Each line is a flat JSON object: ``step`` (int) and named floats. Key families:
``loss`` / ``loss/<term>`` (training losses), ``lr``, ``time`` (seconds since start) and
``eval/<group>/<figure>`` (evaluation figures such as ``eval/segm/AP50``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from maskkit.errors import DataError

__all__ = ["LOSS", "EVAL_PREFIX", "append_record", "read_records", "panel_of", "series"]

LOSS = "loss"  # the summed loss; its terms are "loss/<name>"
EVAL_PREFIX = "eval/"


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one record (must carry an int ``step``)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every record of the log; :class:`DataError` naming the file and line when a line is
    not a JSON object with a numeric ``step`` (or ``iter``, as detectron2 writes it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metrics file not found")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not a JSON line ({e.msg})") from None
            x = row.get("iter", row.get("step")) if isinstance(row, dict) else None
            if not isinstance(x, (int, float)) or isinstance(x, bool):
                raise DataError(f"{path}:{lineno}: expected a JSON object with a numeric 'iter' (or 'step')")
            records.append(row)
    return records


def panel_of(key: str) -> str | None:
    """Which plot panel a key belongs to: ``loss`` (loss*), ``lr``, or ``eval`` (``*/AP*`` and
    ``*/AR*`` summary figures; per-category ``AP-<name>`` curves would bury the rest: left out)."""
    name = key.rsplit("/", 1)[-1]
    if name.startswith(LOSS) or key.startswith(LOSS):
        return "loss"
    if name == "lr":
        return "lr"
    if "/" in key and name[:2] in ("AP", "AR") and "-" not in name:
        return "eval"
    return None


def series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``{key: (steps, values)}`` of the finite plottable values (see :func:`panel_of`)."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in records:
        x = row.get("iter", row.get("step"))
        for key, value in row.items():
            if key in ("iter", "step") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if panel_of(key) is not None and math.isfinite(value):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(x)
                ys.append(float(value))
    return out

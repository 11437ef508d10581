"""Metrics writers of a training run: each takes records (``step`` + named floats) with
``write(record)`` and releases its resources in ``close()``. Adding a writer for another logger
means one class here and one line in :func:`metric_writers`."""

from __future__ import annotations

from pathlib import Path

from maskkit import metrics_log
from maskkit.engine.training.runfolder import RunFiles

__all__ = ["JsonlWriter", "TensorboardWriter", "metric_writers"]


class JsonlWriter:
    """``metrics.jsonl`` (:mod:`maskkit.metrics_log`): losses and lr as logged; of the
    evaluation figures only the headline ones (AP, AP50, AP75, AR@k) — the full table is in
    ``metrics.json`` and ``results.json``."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        keep = {
            k: v
            for k, v in record.items()
            if not k.startswith(metrics_log.EVAL_PREFIX)
            or k.rpartition("/")[2] in ("AP", "AP50", "AP75")
            or "/AR@" in k
        }
        metrics_log.append_record(self.path, keep)

    def close(self) -> None: ...


class TensorboardWriter:
    """``<run>/tensorboard``: every number of every record as a scalar (optional extra)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(folder))

    def write(self, record: dict) -> None:
        for k, v in record.items():
            if k not in ("step", "time") and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.tb.close()


def metric_writers(files: RunFiles, main: bool) -> list:
    """The run's writers: ``metrics.jsonl`` always, TensorBoard when installed (rank 0 only)."""
    if not main:
        return []
    writers: list = [JsonlWriter(files.metrics)]
    try:
        writers.append(TensorboardWriter(files.out / "tensorboard"))
    except ImportError:  # tensorboard is an optional extra
        pass
    return writers

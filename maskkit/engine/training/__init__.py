"""Training: one loop for one process and for torchrun, and what it needs.

- ``loop.py``       :func:`fit`: set up, then ``run_step`` (forward-backward, reduce-and-check,
                    optimiser step) + hooks until the run's length or a stop signal
- ``state.py``      :class:`TrainSetup` (the run's fixed parts) and :class:`LoopState` (what changes)
- ``hooks.py``      one concern per hook (time budget, progress, loss log, evaluation + best model,
                    checkpoint, curves), configured through their constructors; :func:`default_hooks`
- ``writers.py``    metrics writers: ``metrics.jsonl``, TensorBoard
- ``run.py``        ``maskkit train``: a preset + a dataset on disk -> a run folder
- ``resume.py``     continue a run from its newest complete checkpoint pair
- ``schedule.py``   optimiser and learning-rate schedule
- ``runfolder.py``  run-folder lock, refusal to overwrite, crash-proof checkpoint pairs
- ``rng.py`` ``signals.py``   RNG state; SIGINT / SIGTERM as a stop flag

The data stream (seeded global batches) is :mod:`maskkit.data.loader`; what differs between
systems comes from :mod:`maskkit.engine.systems`; evaluation during training goes through
:mod:`maskkit.engine.inference`. This package never imports :mod:`maskkit.export`.
"""

from maskkit.engine.training.hooks import default_hooks
from maskkit.engine.training.loop import TrainingError, fit
from maskkit.engine.training.run import build_config, load_datasets, train

__all__ = ["fit", "train", "TrainingError", "build_config", "load_datasets", "default_hooks"]

"""Training: one loop for one process and for torchrun, and what it needs.

- ``loop.py``       :func:`fit`: set up, then ``run_step`` + hooks until ``max_iter`` or a stop signal
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

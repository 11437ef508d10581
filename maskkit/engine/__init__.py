"""The engine runs models: training, inference, the demo and the benchmark, on one seam per system.

- ``systems.py``      the :class:`System` protocol and one record per system (CenterMask, SharpMask):
                      everything the engine needs to know about a system beyond ``model(images, targets)``
- ``distributed.py``  torchrun / DDP process group, rank helpers, gathering
- ``training/``       the loop, hooks, schedule, run folder (:mod:`maskkit.engine.training`)
- ``inference/``      Predictor, evaluation, predict files and video (:mod:`maskkit.engine.inference`)
- ``demo.py``         ``maskkit demo``: synthetic data -> train -> evaluate -> pictures
- ``bench.py``        ``maskkit bench``: latency beside a peer, per runtime

Layers (import-linter): demo/bench > training > inference > systems/distributed.
"""

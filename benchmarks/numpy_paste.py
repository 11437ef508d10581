"""The NumPy paste of the ONNX runner (maskkit/export/numpy_ops.py ``paste_masks``): full-image
matrix products per mask (before) vs products over each box's region only (now). 50 random
masks and boxes at 600x800, median of 5; the "before" code is read from a file given on the
command line (e.g. ``git show d7f9560:maskkit/engine/onnx_runtime.py > /tmp/old_ort.py``).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python benchmarks/numpy_paste.py /tmp/old_ort.py
"""

import importlib.util
import statistics
import sys
import time

import numpy as np

from maskkit.export import numpy_ops as new

spec = importlib.util.spec_from_file_location("old_ort", sys.argv[1])
old_ort = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old_ort)
rng = np.random.default_rng(0)
n = 50
xy = rng.uniform(0, 700, (n, 2)).astype(np.float32)
wh = rng.uniform(20, 300, (n, 2)).astype(np.float32)
boxes = np.concatenate([xy, xy + wh], 1)
boxes[:, 1::2] *= 0.75
masks = rng.random((n, 28, 28), dtype=np.float32)
a = old_ort.paste_masks(masks, boxes, (600, 800))
b = new.paste_masks(masks, boxes, (600, 800))
print("max diff", np.abs(a - b).max())
for name, f in [("old full-image", old_ort.paste_masks), ("new box-local", new.paste_masks)]:
    t = []
    for _ in range(5):
        t0 = time.perf_counter()
        f(masks, boxes, (600, 800))
        t.append(time.perf_counter() - t0)
    print(name, f"{statistics.median(t) * 1000:.1f} ms")

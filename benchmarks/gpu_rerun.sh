#!/usr/bin/env bash
# Issue #16, the second device call: the tests fixed after the first call (test-side device
# comparisons; torch7 without torchfile), the model tests again, and the proposals section
# in fp32 (the first call's proposals ran past its 100 s cap). Same setup as gpu_run.sh.
set -u
. benchmarks/gpu_setup.sh  # (the two calls of 2026-11-26 ran these lines inline)
echo "=== model tests on cuda ($(date -u +%T))"
timeout 75 python3 -m pytest tests/models tests/convert/test_centermask2.py --device cuda -q -n 12 \
  -p no:cacheprovider --timeout 60 -rfEs > "$OUT/pytest_cuda_rerun.log" 2>&1; echo "pytest rc=$?"
tail -8 "$OUT/pytest_cuda_rerun.log"
echo "=== proposals ($(date -u +%T))"
timeout 80 python3 benchmarks/gpu_speed.py --section proposals --iters 20 --warmup 2 --precisions fp32 \
  --out "$OUT/gpu_proposals.json" 2>&1 | tail -8
echo "=== end ($(date -u +%T))"

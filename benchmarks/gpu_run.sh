#!/usr/bin/env bash
# Issue #16: the one prepared call on a lent GPU machine (benchmarks/gpu.md has the results).
# Run from the repository root there, with coco-tiny copied to .gpu_data/coco-tiny and the
# pycocotools wheel in .whl/ (the machine has PyTorch but not pycocotools; nothing can be
# downloaded there), both carried with the call; results land in $OUT (at most 8 files).
set -u
. benchmarks/gpu_setup.sh  # (the two calls of 2026-11-26 ran these lines inline)
step() { echo "=== $1 ($(date -u +%T))"; }
{
  step environment
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch, torchvision, onnxruntime as ort; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'torchvision', torchvision.__version__, 'onnxruntime', ort.__version__, ort.get_available_providers())"
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
step "model tests on cuda"
timeout ${T_TESTS:-170} python3 -m pytest tests/models tests/convert/test_centermask2.py --device cuda -q -n 8 \
  -p no:cacheprovider --timeout 150 -rfEs > "$OUT/pytest_cuda.log" 2>&1; echo "pytest rc=$?"
tail -25 "$OUT/pytest_cuda.log"
for s in latency:30 train:20 proposals:20; do
  step "${s%:*}"
  timeout ${T_SECTION:-100} python3 benchmarks/gpu_speed.py --section ${s%:*} --iters ${s#*:} --warmup 5 \
    --out "$OUT/gpu_${s%:*}.json" 2>&1 | tail -22
done
step demo
( time timeout ${T_DEMO:-200} python3 -m maskkit demo --device cuda --out /tmp/demo_gpu --no-progress ) > "$OUT/demo.log" 2>&1
tail -30 "$OUT/demo.log"
step compile
timeout ${T_COMPILE:-100} python3 benchmarks/gpu_speed.py --section compile --iters 20 --warmup 3 \
  --out "$OUT/gpu_compile.json" 2>&1 | tail -8
step end

#!/bin/bash
# One CenterMask demo-recipe training run on a synthetic dataset, evaluated on its val split.
# The recipe is the one of the "Session 2" E/X rows in synthetic_protocol.md (sizes, AdamW 3e-3,
# warmup 50, cosine, the preset's 100 training detections), kept literal here so those rows stay
# reproducible; today's demo adds model.mask.train_detections=20 (pass it as a KEY=VALUE).
# usage: benchmarks/demo_variant.sh NAME DATA ITERS BATCH [KEY=VALUE ...]
# Appends the headline metrics and the wall/CPU time to ./results.txt (see synthetic_protocol.md).
name=$1; data=$2; iters=$3; batch=$4; shift 4
extra=()
for kv in "$@"; do extra+=(--set "$kv"); done
/usr/bin/time -f "%e s wall %U s user" maskkit train --model centermask_lite_demo --data $data --out $name --batch $batch --iters $iters --no-progress \
  --set train.optimizer=adamw --set train.lr=0.003 --set train.warmup_iters=50 --set train.schedule=cosine \
  --set train.eval_period=0 --set data.num_workers=0 --set "data.min_size_train=[160,176,192,208]" \
  --set data.max_size_train=256 \
  --set model.min_size_test=192 --set model.max_size_test=256 --set train.log_period=20 "${extra[@]}" > $name.log 2>&1
python -c "
import json;m=json.load(open('$name/metrics.json'))
print('$name', {k:round(v*100,1) for k,v in m.items() if k in ('bbox/AP','bbox/AP50','segm/AP','segm/AP50','bbox/APs','bbox/APm','bbox/APl')})" >> results.txt 2>&1 || echo "$name failed" >> results.txt
tail -1 $name.log >> results.txt

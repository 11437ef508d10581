#!/bin/bash
# Behaviour check for a refactor: run the CLI verbs of two checkouts on the same inputs and
# compare what they write (metrics.json, results.json, printed tables).
# usage: benchmarks/same_outputs.sh OLD_TREE NEW_TREE WORKDIR   (uses the python on PATH)
# Each tree is imported through PYTHONPATH (python -m maskkit), so both run in one venv.
set -euo pipefail
old=$(realpath "$1"); new=$(realpath "$2"); work=$(realpath -m "$3")
rm -rf "$work"; mkdir -p "$work"
export OMP_NUM_THREADS=2
run() {  # run TREE NAME ARGS...
  local tree=$1 name=$2; shift 2
  (cd "$work" && PYTHONPATH="$tree" python -m maskkit "$@" > "$work/$name.out" 2> "$work/$name.err")
}
for side in old new; do
  tree=${!side}
  run "$tree" "$side-synth" data synth --out "$work/$side-data" --train 12 --val 6 --size 96 --no-progress
  run "$tree" "$side-demo" demo --quick --out "$work/$side-demo" --no-progress
  run "$tree" "$side-train" train --model centermask_lite_demo --data "$work/$side-data" --out "$work/$side-train" \
      --iters 3 --batch 2 --no-progress --set model.min_size_test=96 --set model.max_size_test=128 \
      --set "data.min_size_train=[96]" --set data.max_size_train=128 --set model.fcos.score_thresh=0.0
  run "$tree" "$side-eval" eval --weights "$work/$side-train/model_last.safetensors" --data "$work/$side-data" \
      --out "$work/$side-eval" --device cpu
  run "$tree" "$side-evalp" eval --predictions "$work/$side-eval/results.json" --data "$work/$side-data" --out "$work/$side-evalp"
  run "$tree" "$side-predict" predict --weights "$work/$side-train/model_last.safetensors" "$work/$side-data/val" \
      --out "$work/$side-predict" --score-thr 0.0 --no-progress --device cpu
  run "$tree" "$side-export" export --weights "$work/$side-train/model_last.safetensors" --out "$work/$side-cm.onnx"
  run "$tree" "$side-opredict" predict --weights "$work/$side-cm.onnx" "$work/$side-data/val" \
      --out "$work/$side-opredict" --score-thr 0.0 --no-progress --no-draw
  run "$tree" "$side-oeval" eval --weights "$work/$side-cm.onnx" --data "$work/$side-data" --out "$work/$side-oeval"
  # SharpMask: stage 1 (DeepMask) and stage 2 (refinement) a few steps each, then eval, predict, export
  run "$tree" "$side-dm" train --model deepmask_demo --data "$work/$side-data" --out "$work/$side-dm" \
      --iters 2 --batch 4 --workers 0 --no-progress --set model.top_n=20 --set "eval.max_dets=[10,20]"
  run "$tree" "$side-sm" train --model sharpmask_demo --data "$work/$side-data" --out "$work/$side-sm" \
      --iters 2 --batch 4 --workers 0 --no-progress --set model.top_n=20 --set "eval.max_dets=[10,20]" \
      --set "train.init_weights=$work/$side-dm/model_last.safetensors"
  run "$tree" "$side-smeval" eval --weights "$work/$side-sm/model_last.safetensors" --data "$work/$side-data" \
      --out "$work/$side-smeval" --device cpu
  run "$tree" "$side-smpredict" predict --weights "$work/$side-sm/model_last.safetensors" "$work/$side-data/val" \
      --out "$work/$side-smpredict" --score-thr 0.0 --no-progress --no-draw --device cpu
  run "$tree" "$side-smexport" export --weights "$work/$side-sm/model_last.safetensors" --out "$work/$side-sm.onnx"
  run "$tree" "$side-smopredict" predict --weights "$work/$side-sm.onnx" "$work/$side-data/val" \
      --out "$work/$side-smopredict" --score-thr 0.0 --no-progress --no-draw
  run "$tree" "$side-models" models centermask_lite_demo deepmask_demo sharpmask_demo
  run "$tree" "$side-bench" bench --model centermask_lite_demo --iters 1 --warmup 0 --size 96
done
# files written by the old tree, read by the new one: model files and .onnx files still load and
# give the old tree's results
run "$new" cross-eval eval --weights "$work/old-train/model_last.safetensors" --data "$work/old-data" \
    --out "$work/cross-eval" --device cpu
run "$new" cross-opredict predict --weights "$work/old-cm.onnx" "$work/old-data/val" --out "$work/cross-opredict" \
    --score-thr 0.0 --no-progress --no-draw
run "$new" cross-smopredict predict --weights "$work/old-sm.onnx" "$work/old-data/val" \
    --out "$work/cross-smopredict" --score-thr 0.0 --no-progress --no-draw
status=0
same() {  # same LABEL FILE_A FILE_B
  if cmp -s "$2" "$3"; then echo "same      $1"; else echo "DIFFERENT $1"; status=1; fi
}
for f in demo/metrics.json demo/results.json train/metrics.json eval/metrics.json eval/results.json \
         evalp/metrics.json oeval/metrics.json oeval/results.json smeval/metrics.json smeval/results.json; do
  same "$f" "$work/old-$f" "$work/new-$f"
done
for f in data/annotations/instances_train.json data/annotations/instances_val.json; do
  same "$f" "$work/old-$f" "$work/new-$f"
done
same "models table" "$work/old-models.out" "$work/new-models.out"
# predict's results name the input files, whose folder differs by name: compare after replacing it
for f in predict/results.json opredict/results.json smpredict/results.json smopredict/results.json; do
  same "$f" <(sed "s#$work/old-#X-#g" "$work/old-$f") <(sed "s#$work/new-#X-#g" "$work/new-$f")
done
same "old model file, new tree: eval/results.json" "$work/old-eval/results.json" "$work/cross-eval/results.json"
same "old .onnx, new tree: opredict/results.json" "$work/old-opredict/results.json" "$work/cross-opredict/results.json"
same "old .onnx, new tree: smopredict/results.json" "$work/old-smopredict/results.json" \
     "$work/cross-smopredict/results.json"
# training logs without their wall-clock "time" field
untimed() { python -c 'import json,sys; [print(json.dumps({k: v for k, v in json.loads(l).items() if k != "time"})) for l in open(sys.argv[1])]' "$1"; }
for f in train/metrics.jsonl dm/metrics.jsonl sm/metrics.jsonl; do
  same "$f (without time)" <(untimed "$work/old-$f") <(untimed "$work/new-$f")
done
# the weights and metadata a training run wrote (every tensor bit for bit; the file's bytes may not
# be; the run folders' names, which stage 2's config holds in train.init_weights, replaced; the
# input convention compared as the file states it, in its config or its own entry)
weights() { python -c '
import json, sys
import torch
from safetensors import safe_open
f = safe_open(sys.argv[1], "pt")
meta = dict(f.metadata())
cfg = json.loads(meta.pop("maskkit_config"))
# the weights input convention: its own metadata entry since the engine redesign (#23); older
# files state it in their config, which the ImageNet trunk loader rewrote during the build
m = cfg["model"]
conv = json.loads(meta.pop("input_convention", "null")) or {
    "format": m.get("input_format", "RGB"), "pixel_mean": m["pixel_mean"], "pixel_std": m["pixel_std"]}
for k in ("input_format", "pixel_mean", "pixel_std"):
    m.pop(k, None)
print(json.dumps(meta, sort_keys=True), json.dumps(cfg, sort_keys=True), json.dumps(conv, sort_keys=True))
for k in sorted(f.keys()):
    t = f.get_tensor(k)
    print(k, t.dtype, tuple(t.shape), t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes().hex())
' "$1" 2>/dev/null | sed "s#$work/old-#X-#g; s#$work/new-#X-#g"; }
same "train weights" <(weights "$work/old-train/model_last.safetensors") <(weights "$work/new-train/model_last.safetensors")
same "deepmask weights" <(weights "$work/old-dm/model_last.safetensors") <(weights "$work/new-dm/model_last.safetensors")
same "sharpmask weights" <(weights "$work/old-sm/model_last.safetensors") <(weights "$work/new-sm/model_last.safetensors")
# predict prints the output folder, which differs by name: compare after replacing it
same "predict summary" <(sed "s#$work/old-#X-#g" "$work/old-predict.out") <(sed "s#$work/new-#X-#g" "$work/new-predict.out")
same "eval table" "$work/old-eval.out" <(sed "s#$work/new-#$work/old-#g" "$work/new-eval.out")
# bench: timings differ run to run; the table's other columns (model, runtime, input, detections, GFLOPs) must not
same "bench columns" <(awk '$3 ~ /^[0-9]+x[0-9]+$/ {print $1,$2,$3,$4,$7}' "$work/old-bench.out") \
     <(awk '$3 ~ /^[0-9]+x[0-9]+$/ {print $1,$2,$3,$4,$7}' "$work/new-bench.out")
exit $status

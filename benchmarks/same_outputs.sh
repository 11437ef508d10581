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
      --set "data.min_size_train=[96]" --set data.max_size_train=128
  run "$tree" "$side-eval" eval --weights "$work/$side-train/model_last.safetensors" --data "$work/$side-data" \
      --out "$work/$side-eval" --device cpu
  run "$tree" "$side-evalp" eval --predictions "$work/$side-eval/results.json" --data "$work/$side-data" --out "$work/$side-evalp"
  run "$tree" "$side-predict" predict --weights "$work/$side-train/model_last.safetensors" "$work/$side-data/val" \
      --out "$work/$side-predict" --score-thr 0.0 --no-progress --device cpu
  run "$tree" "$side-models" models centermask_lite_demo deepmask_demo sharpmask_demo
  run "$tree" "$side-bench" bench --model centermask_lite_demo --iters 1 --warmup 0 --size 96
done
status=0
same() {  # same LABEL FILE_A FILE_B
  if cmp -s "$2" "$3"; then echo "same      $1"; else echo "DIFFERENT $1"; status=1; fi
}
for f in demo/metrics.json demo/results.json train/metrics.json eval/metrics.json eval/results.json \
         evalp/metrics.json predict/results.json; do
  same "$f" "$work/old-$f" "$work/new-$f"
done
for f in data/annotations/instances_train.json data/annotations/instances_val.json; do
  same "$f" "$work/old-$f" "$work/new-$f"
done
same "models table" "$work/old-models.out" "$work/new-models.out"
# predict prints the output folder, which differs by name: compare after replacing it
same "predict summary" <(sed "s#$work/old-#X-#g" "$work/old-predict.out") <(sed "s#$work/new-#X-#g" "$work/new-predict.out")
same "eval table" "$work/old-eval.out" <(sed "s#$work/new-#$work/old-#g" "$work/new-eval.out")
# bench: timings differ run to run; the table's other columns must not
same "bench columns" <(awk 'NR>1{print $1,$2,$3,$6}' "$work/old-bench.out") <(awk 'NR>1{print $1,$2,$3,$6}' "$work/new-bench.out")
exit $status

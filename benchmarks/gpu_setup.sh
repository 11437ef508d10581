# Sourced by benchmarks/gpu_run.sh and gpu_rerun.sh on the lent GPU machine (repository root):
# $OUT, the carried pycocotools wheel (.whl/) on PYTHONPATH, coco-tiny (.gpu_data/) where the
# tests and benchmarks look for it (../shared beside the checkout).
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p ../shared/data && ln -sfn "$PWD/.gpu_data/coco-tiny" ../shared/data/coco-tiny

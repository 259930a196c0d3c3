#!/usr/bin/env bash
# The model-quality measurement of docs/training.md and the README: the shipped default model and
# the non-learned graph baseline on the REAL validation scans of ../shared/data/real (whole LiDAR
# sweeps and a whole indoor room; multi-object protocol, samples with 1, 3 and 5 objects, 20
# clicks per object). JSON reports -> benchmarks/results/real_val_<domain>_<segmenter>.json.
#   bash scripts/eval_real.sh                    the shipped defaults, as the node runs them: the
#                                                default model, and the indoor model for scans
#                                                with colours (npiseg-eval with no --checkpoint)
#   bash scripts/eval_real.sh CHECKPOINT [RGB]   one model for every scan, or RGB for coloured ones
# Each evaluation runs single-threaded; the four run two at a time on a 2-core machine.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${NPISEG_REAL_DATA:-$REPO/../shared/data/real}"
PY="${VENV:-$REPO/.venv}/bin/python"
OUT="$REPO/benchmarks/results"
mkdir -p "$OUT"
MODEL=()
if [ $# -ge 1 ]; then MODEL=(--checkpoint "$1" --rgb-checkpoint "${2:-none}"); fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
run() {  # domain, name, segmenter args...
  local domain=$1 name=$2; shift 2
  "$PY" -m npiseg_ros.eval.cli --data "$DATA/$domain/val" --format scans --mode multi \
    --max-clicks 20 --seed 0 --out "$OUT/real_val_${domain}_${name}.json" "$@" --no-progress \
    > "$OUT/real_val_${domain}_${name}.txt" 2>&1
}
run lidar model ${MODEL[@]+"${MODEL[@]}"} & run lidar graph --baseline graph & wait
run indoor model ${MODEL[@]+"${MODEL[@]}"} & run indoor graph --baseline graph & wait
for f in "$OUT"/real_val_{lidar,indoor}_{model,graph}.txt; do echo "== $(basename "$f" .txt)"; cat "$f"; done

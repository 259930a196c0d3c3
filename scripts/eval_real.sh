#!/usr/bin/env bash
# The model-quality measurement of docs/training.md and the README (issue 20's extended protocol)
# on the REAL validation scans of ../shared/data/real: whole LiDAR sweeps and a whole indoor room,
# multi-object protocol, 20 clicks per object. Each table compares the shipped model with what
# it is built on: its own geodesic prior alone (--baseline prior), the non-learned region
# growing (--baseline graph) and the model with its latents at their means (--latents mean).
#   bash scripts/eval_real.sh                    the shipped defaults, as the node runs them: the
#                                                default model, and the indoor model for scans
#                                                with colours (npiseg-eval with no --checkpoint)
#   bash scripts/eval_real.sh CHECKPOINT [RGB]   one model for every scan, or RGB for coloured ones
# Parts (PARTS="things stuff classes indoor" by default; add "raw" for the former LiDAR table):
#   things   LiDAR val, clean thing instances (npiseg_ros/eval/targets.py), samples of 1, 3, 5 and
#            10 objects per sweep; rows model / means / prior / graph, each over SEEDS (the seed
#            picks the samples and the latent draws: the spread is what a keep/reject call must
#            beat; every row sees the same samples per seed)
#   stuff    the same rows on stuff pieces (the sweeps with semantics: SemanticKITTI, PandaSet)
#   classes  secondary: whole semantic classes as targets; rows model / graph, seed 0
#   indoor   the room as before: its stored instances, 1, 3 and 5 objects; model / graph, seed 0
#   raw      the LiDAR table as before (stored instances, 1, 3, 5 objects; model / graph, seed 0)
# Reports -> $OUT/real_val_<domain>[_<targets>]_<row>.json (with --seeds: the mean and spread
# there, each seed's report in ..._seed<N>.json) and the printed tables in the .txt beside it.
# Environment: OUT (default benchmarks/results), SEEDS (default "0 1 2"), LIMIT (samples per run
# and seed: a quick check), JOBS (runs at once, default 2; each is single-threaded).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${NPISEG_REAL_DATA:-$REPO/../shared/data/real}"
PY="${VENV:-$REPO/.venv}/bin/python"
OUT="${OUT:-$REPO/benchmarks/results}"
PARTS="${PARTS:-things stuff classes indoor}"
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
JOBS="${JOBS:-2}"
mkdir -p "$OUT"
MODEL=()
if [ $# -ge 1 ]; then MODEL=(--checkpoint "$1" --rgb-checkpoint "${2:-none}"); fi
LIMIT_ARGS=()
if [ -n "${LIMIT:-}" ]; then LIMIT_ARGS=(--limit "$LIMIT"); fi
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
FAILED="$(mktemp)"
trap 'rm -f "$FAILED"' EXIT
NAMES=()

run() {  # name, domain, npiseg-eval args...: in the background, at most JOBS at once
  local name=$1 domain=$2; shift 2
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  NAMES+=("$name")
  (
    start=$(date +%s)
    if "$PY" -m npiseg_ros.eval.cli --data "$DATA/$domain/val" --format scans --mode multi \
        --max-clicks 20 --out "$OUT/real_val_${name}.json" "$@" \
        ${LIMIT_ARGS[@]+"${LIMIT_ARGS[@]}"} --no-progress > "$OUT/real_val_${name}.txt" 2>&1; then
      echo "done $name in $(( $(date +%s) - start )) s"
    else
      echo "$name" >> "$FAILED"; echo "FAILED $name (log: $OUT/real_val_${name}.txt)"
    fi
  ) &
}

rows() {  # targets: the four rows of a LiDAR table, every one over the seeds
  local targets=$1 seeds=(--seeds "${SEEDS[@]}")
  local common=(--targets "$targets" --objects-per-sample 1 3 5 10 "${seeds[@]}")
  run "lidar_${targets}_model" lidar "${common[@]}" ${MODEL[@]+"${MODEL[@]}"}
  run "lidar_${targets}_means" lidar "${common[@]}" --latents mean ${MODEL[@]+"${MODEL[@]}"}
  run "lidar_${targets}_prior" lidar "${common[@]}" --baseline prior ${MODEL[@]+"${MODEL[@]}"}
  run "lidar_${targets}_graph" lidar "${common[@]}" --baseline graph
}

for part in $PARTS; do
  case "$part" in
    things | stuff) rows "$part" ;;
    classes)
      run lidar_classes_model lidar --targets classes --objects-per-sample 1 3 5 10 --seed 0 \
        ${MODEL[@]+"${MODEL[@]}"}
      run lidar_classes_graph lidar --targets classes --objects-per-sample 1 3 5 10 --seed 0 \
        --baseline graph ;;
    indoor)
      run indoor_model indoor --seed 0 ${MODEL[@]+"${MODEL[@]}"}
      run indoor_graph indoor --seed 0 --baseline graph ;;
    raw)
      run lidar_model lidar --seed 0 ${MODEL[@]+"${MODEL[@]}"}
      run lidar_graph lidar --seed 0 --baseline graph ;;
    *) echo "unknown part '$part' (things, stuff, classes, indoor, raw)" >&2; exit 2 ;;
  esac
done
wait
for name in "${NAMES[@]}"; do  # each run's table, or with seeds the mean and spread
  log="$OUT/real_val_${name}.txt"
  echo "== real_val_$name"
  if grep -q '^mean \[min-max\]' "$log"; then sed -n '/^mean \[min-max\]/,$p' "$log"
  else tail -n 5 "$log"; fi
done
if [ -s "$FAILED" ]; then echo "failed: $(tr '\n' ' ' < "$FAILED")" >&2; exit 1; fi

#!/usr/bin/env bash
# Run the numerical tests (everything but the ROS node tests) under several CPU code paths and
# thread counts, to catch thresholds tuned to one CPU (docs/reliability.md).
#
# Usage: scripts/cpu_matrix.sh [SETTING ...] [-- PYTEST ARGS]
#   SETTING: native | avx2 | default | oldcpu, each optionally ":THREADS" (default 1), e.g.
#   `scripts/cpu_matrix.sh default:1 avx2:2`. No setting: the full matrix
#   {native, avx2, default, oldcpu} x {1, 2 threads}.
#   native  - whatever this CPU offers (AVX-512/AMX where present)
#   avx2    - ATEN_CPU_CAPABILITY=avx2 (PyTorch's vectorised kernels)
#   default - ATEN_CPU_CAPABILITY=default (no PyTorch SIMD kernels)
#   oldcpu  - default plus MKL/oneDNN capped at AVX2 and numpy's AVX-512 loops off
# Writes one log per setting to ${OUT:-/tmp/npiseg_cpu_matrix} and prints a summary; exits
# non-zero when any setting failed.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${VENV:-$REPO/.venv}/bin/python"
OUT="${OUT:-/tmp/npiseg_cpu_matrix}"
mkdir -p "$OUT"
settings=()
while [[ $# -gt 0 && "$1" != "--" ]]; do settings+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
[[ ${#settings[@]} -eq 0 ]] && settings=(native:1 native:2 avx2:1 avx2:2 default:1 default:2
                                         oldcpu:1 oldcpu:2)
cd "$REPO"
tests=()
for file in test/test_*.py; do [[ "$file" == test/test_ros_* ]] || tests+=("$file"); done
[[ $# -gt 0 ]] && tests=("$@")
export MPLBACKEND=Agg OMP_WAIT_POLICY=PASSIVE ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
status=0
summary=()
for setting in "${settings[@]}"; do
  name="${setting%%:*}"; threads="${setting#*:}"; [[ "$threads" == "$setting" ]] && threads=1
  env_vars=(OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" NPISEG_TEST_THREADS="$threads")
  case "$name" in
    native) ;;
    avx2) env_vars+=(ATEN_CPU_CAPABILITY=avx2) ;;
    default) env_vars+=(ATEN_CPU_CAPABILITY=default) ;;
    oldcpu) env_vars+=(ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2
                       DNNL_MAX_CPU_ISA=AVX2
                       "NPY_DISABLE_CPU_FEATURES=X86_V4 AVX512_ICL AVX512_SPR") ;;
    *) echo "unknown setting $name" >&2; exit 2 ;;
  esac
  log="$OUT/$name-$threads.log"
  echo "[cpu_matrix] $name, $threads thread(s): ${env_vars[*]}"
  env "${env_vars[@]}" "$PY" -c 'import torch; print("torch CPU capability:", torch.backends.cpu.get_cpu_capability())' >"$log" 2>&1
  env "${env_vars[@]}" "$PY" -m pytest -q -p no:cacheprovider "${tests[@]}" >>"$log" 2>&1
  rc=$?
  if [[ $rc -ne 0 ]]; then status=1; tail -n 80 "$log"; fi
  summary+=("$name:$threads rc=$rc $(grep -E '^(FAILED|ERROR)|[0-9]+ (passed|failed)' "$log" | tr '\n' ' ')")
done
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
exit $status

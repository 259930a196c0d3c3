#!/usr/bin/env bash
# Prepare a bare machine: a virtual environment with PyTorch (CPU), the package and its
# dependencies, the ROS 2 kilted wheels and this package's interfaces built from them.
#
# Usage: scripts/setup.sh            (venv at <repo>/.venv; override with VENV=/path)
# Needs: python3 (>= 3.10) with venv, cmake, g++. Safe to run again: finished steps are skipped.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PY="$VENV/bin/python"
# A pinned CPU build: an unpinned torch pulls a multi-GB CUDA build. Users with a GPU install
# their own torch first (any 2.x >= 2.1); the pin only applies when torch is missing.
TORCH_SPEC="${NPISEG_TORCH_SPEC:-torch==2.13.0}"

log() { echo "[setup] $*"; }

if ! "$PY" -m pip --version >/dev/null 2>&1; then
  # Missing, or left half-made by an interrupted run: (re)create it.
  log "creating virtual environment $VENV"
  python3 -m venv --clear "$VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
  log "installing $TORCH_SPEC"
  "$PY" -m pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
fi
log "installing npiseg_ros and its dependencies"
# compat editable mode: a plain path entry, so `npiseg_ros/__init__.py` (which merges in the
# generated npiseg_ros.msg/srv modules) runs from any working directory.
"$PY" -m pip install --quiet --disable-pip-version-check -e "$REPO[test,annotate,fleet]" \
  --config-settings editable_mode=compat
bash "$REPO/scripts/build_interfaces.sh" "$VENV"
# three.js for npiseg-annotate's 3-D view (WebGL), served by its server from $REPO/.web; without
# npm the page keeps its own 2-D canvas renderer.
THREE_VERSION="0.187.0"
if [ -f "$REPO/.web/node_modules/three/build/three.module.js" ] && \
    grep -q "\"version\": \"$THREE_VERSION\"" "$REPO/.web/node_modules/three/package.json"; then
  :
elif command -v npm >/dev/null 2>&1; then
  log "installing three@$THREE_VERSION (npm) into $REPO/.web for npiseg-annotate's 3-D view"
  npm install --prefix "$REPO/.web" --no-audit --no-fund --loglevel=error \
    "three@$THREE_VERSION" >&2 || log "npm failed: npiseg-annotate draws with its 2-D canvas"
else
  log "npm not found: npiseg-annotate draws with its 2-D canvas (install nodejs + npm and" \
      "run this again for the 3-D view)"
fi
log "done: $VENV"

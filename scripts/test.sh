#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, ROS 2 node tests over real DDS included.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
# Tests never leave the machine and never need a display.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST MPLBACKEND=Agg
# Spinning OpenMP workers starve the other processes a test starts (ROS node, DDP workers) on
# 2 cores; passive waiting keeps parallel ops from collapsing (docs/backbone.md).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "${VENV:-$REPO/.venv}/bin/python" -m pytest -q "$@"

#!/usr/bin/env bash
# The main job: set up (if needed), then run the segmentation node and a scripted user node in
# separate processes over real ROS 2 DDS on the bundled real SemanticKITTI scan. Writes PNGs of
# labels and uncertainty after selected clicks, and the saved annotation, to out/demo/.
# Extra arguments go to the demo (e.g. --synthetic, --scan PATH, --objects 6, --out DIR).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
cd "$REPO"
export MPLBACKEND=Agg OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "${VENV:-$REPO/.venv}/bin/python" -m npiseg_ros.ros.demo "$@"

#!/usr/bin/env bash
# npiseg-annotate on a fresh clone: set up (if needed), then serve the browser labelling tool on
# http://127.0.0.1:8765/ . With no arguments it opens the bundled real SemanticKITTI sweep
# (near field, 15 m) with its session folder in out/annotate/kitti, and options alone (e.g.
# --port 0) are added to that; otherwise the arguments go to npiseg-annotate (e.g. a bag:
# scripts/annotate.sh drive.mcap --session out/annotate/drive).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh" >&2
cd "$REPO"
if [ "$#" -eq 0 ] || [[ "$1" == --* ]]; then
  set -- ../shared/data/semantickitti/sequences/00/velodyne/000000.bin --max-range 15 \
    --session out/annotate/kitti "$@"
fi
exec "${VENV:-$REPO/.venv}/bin/npiseg-annotate" "$@"

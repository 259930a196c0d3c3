"""Files shipped with the package (config, checkpoints), wherever it was installed.

Shared by the ROS node, the demo and ``npiseg-eval``; imports nothing from ROS (the ament index
is consulted lazily when present).
"""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["PACKAGE_ROOT", "share_path", "shipped_checkpoint"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""Directory holding the ``npiseg_ros`` package (the repository root in a source checkout)."""


def share_path(relative: str) -> Path:
    """A shipped data file (``config/...``, ``checkpoints/...``) wherever it was installed.

    Looks in the source checkout, then ``<prefix>/share/npiseg_ros`` (``pip install .`` data
    files), then the ament index (colcon). Returns the source-checkout path when none exists.
    """
    candidates = [PACKAGE_ROOT / relative, Path(sys.prefix) / "share" / "npiseg_ros" / relative]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("npiseg_ros")) / relative)
    except Exception:  # not installed through colcon / no ament index: fine
        pass
    return next((path for path in candidates if path.exists()), candidates[0])


def shipped_checkpoint() -> str:
    """A checkpoint shipped with the package (``checkpoints/*.safetensors``), preferring
    LiDAR-trained ones by name; empty when none is installed."""
    found = sorted(share_path("checkpoints").glob("*.safetensors"))
    lidar = [path for path in found if "lidar" in path.name or "kitti" in path.name]
    return str((lidar or found)[0]) if found else ""

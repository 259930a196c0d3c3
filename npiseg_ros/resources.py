"""Files shipped with the package (config, checkpoints), wherever it was installed.

Read by ``core.router.ModelRouter`` (the node, the demo, ``npiseg-eval``,
``npiseg-annotate``); imports nothing from ROS (the ament index is consulted lazily when
present).
"""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["PACKAGE_ROOT", "share_candidates", "share_path", "shipped_checkpoint",
           "shipped_rgb_checkpoint"]

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""Directory holding the ``npiseg_ros`` package (the repository root in a source checkout)."""


def share_candidates(relative: str) -> list[Path]:
    """Where a shipped data file (``config/...``, ``checkpoints/...``) may be, in lookup order.

    1. the source checkout (also what a ``colcon build --symlink-install`` links to);
    2. ``<prefix>/share/npiseg_ros`` of the prefix this module is installed in
       (``<prefix>/lib/pythonX.Y/site-packages/npiseg_ros``: colcon, ``pip install .``);
    3. ``sys.prefix/share/npiseg_ros`` (pip data files of the running interpreter);
    4. the ament index (a sourced colcon workspace or ROS installation).
    """
    site = ("site-packages", "dist-packages")
    installed = Path(__file__).absolute().parent  # not resolved: symlink installs keep prefix
    roots = [PACKAGE_ROOT] if PACKAGE_ROOT.name not in site else []  # a checkout, not an install
    if installed.parent.name in site:
        roots.append(installed.parents[3] / "share" / "npiseg_ros")
    roots.append(Path(sys.prefix) / "share" / "npiseg_ros")
    try:
        from ament_index_python.packages import get_package_share_directory

        roots.append(Path(get_package_share_directory("npiseg_ros")))
    except Exception:  # not installed through colcon / no ament index: fine
        pass
    unique = list(dict.fromkeys(root / relative for root in roots))
    return unique


def share_path(relative: str) -> Path:
    """A shipped data file (``config/...``, ``checkpoints/...``) wherever it was installed.

    The first existing of :func:`share_candidates`; the source-checkout path when none exists.
    """
    candidates = share_candidates(relative)
    return next((path for path in candidates if path.exists()), candidates[0])


DEFAULT_CHECKPOINT = "npiseg_prior_10cm.safetensors"
"""The default model (docs/training.md): the best measured on real LiDAR sweeps — the joint
prior model fine-tuned to decode on 20 cm cells (run ``prior_coarse_v1``), then on 40 cm cells
(run ``prior_coarse8_v1``, shipped as ``npiseg_prior_coarse8.safetensors`` for clouds that need
5 cm voxels), then on 10 cm voxels and 80 cm cells (run ``prior_vx10s8_v1``): better on the
real val sweeps than the 5 cm models, and the fastest per click."""

RGB_CHECKPOINT = "npiseg_prior.safetensors"
"""The model for clouds WITH colours (RGB-D rooms), when shipped (docs/training.md): the joint
prior model at full-resolution decoding (run ``prior_v1``). On the real indoor val room the
coarse models needed more clicks for 85 % IoU (NoC@85 7.58 at 20 cm cells, 10.49 at 40 cm, vs
5.69), so coloured clouds keep the full-resolution decoder."""


def shipped_checkpoint() -> str:
    """The checkpoint shipped with the package (``checkpoints/*.safetensors``):
    ``DEFAULT_CHECKPOINT`` when installed, else the first by name (never the RGB model);
    empty when none is."""
    found = sorted(path for path in share_path("checkpoints").glob("*.safetensors")
                   if path.name != RGB_CHECKPOINT)
    preferred = [path for path in found if path.name == DEFAULT_CHECKPOINT]
    return str((preferred or found)[0]) if found else ""


def shipped_rgb_checkpoint() -> str:
    """The shipped model for coloured clouds (``RGB_CHECKPOINT``), or empty when not shipped."""
    path = share_path("checkpoints") / RGB_CHECKPOINT
    return str(path) if path.is_file() else ""

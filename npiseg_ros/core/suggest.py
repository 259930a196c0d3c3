"""Where should the user click next? The centre of the most uncertain region."""
from __future__ import annotations

import numpy as np

from npiseg_ros.core.voxelize import voxelize


def suggest_next_click(xyz: np.ndarray, uncertainty: np.ndarray, region_size: float,
                       cell_of_point: np.ndarray | None = None
                       ) -> tuple[float, float, float] | None:
    """Pick the point at the centre of the region holding the most uncertainty.

    Points are binned into cubes of ``region_size`` metres; the cube with the largest summed
    uncertainty wins, and the returned position is the point of that cube nearest to its
    uncertainty-weighted centroid (so the suggestion always lies on the cloud).

    Args:
        xyz: (P, 3) float finite coordinates, metres.
        uncertainty: (P,) float non-negative uncertainty per point.
        region_size: cube edge in metres (> 0).
        cell_of_point: (P,) cube index of every point, from :func:`region_cells` (a session
            computes it once per cloud instead of binning every point after every click).

    Returns:
        (x, y, z) of the suggested point, or None when no point is uncertain.
    """
    weights = np.nan_to_num(uncertainty.astype(np.float64), nan=0.0)
    if xyz.shape[0] == 0 or not weights.max(initial=0.0) > 0.0:
        return None
    if cell_of_point is None:
        cell_of_point = region_cells(xyz, region_size)
    totals = np.bincount(cell_of_point, weights=weights)
    members = np.flatnonzero(cell_of_point == int(np.argmax(totals)))
    member_weights = weights[members]
    centroid = (xyz[members] * member_weights[:, None]).sum(axis=0) / member_weights.sum()
    nearest = members[np.argmin(np.square(xyz[members] - centroid).sum(axis=1))]
    return tuple(float(v) for v in xyz[nearest])


def region_cells(xyz: np.ndarray, region_size: float) -> np.ndarray:
    """(P,) int64 index of the ``region_size`` cube of every point (for ``suggest_next_click``)."""
    return voxelize(xyz, region_size).point_to_voxel

"""Where should the user click next?

The evaluation's simulated user (the field's protocol) clicks the point deepest inside the
largest connected error region. A user who follows the node's suggestion should do the same
with what the model knows: :func:`suggest_error_region` groups the points the model expects
to have wrong into connected regions of one predicted label, scores each region by its
expected number of wrong points, and suggests the point deepest inside the best one.
:func:`suggest_next_click` (the older rule: the cube with the most summed uncertainty) is kept
for segmenters that give no per-point confidence.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from npiseg_ros.core.sparse.coords import key_radix, lexicographic_keys
from npiseg_ros.core.voxelize import voxelize

DOUBT_THRESHOLD = 0.1
"""Points whose predicted label has probability below 1 - this are 'in doubt': the model
gives the other labels at least this much; they form the candidate error regions. Chosen on
TRAINING scans (the suggestion-following user of ``npiseg-eval --uncertainty-user``, 8 samples
of 3 objects each, things and stuff pieces; docs/evaluation.md): 0.1 needed fewer clicks than
0.2 for things (NoC@85 5.0 vs 6.7) and as many or fewer for stuff; 0.05 and 0.35 did worse."""

_HALF_NEIGHBOURS = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
                             for dz in (-1, 0, 1) if (dx, dy, dz) > (0, 0, 0)], np.int64)
"""13 of the 26 grid neighbours: each adjacent pair of cells is linked once."""
_ALL_NEIGHBOURS = np.concatenate([_HALF_NEIGHBOURS, -_HALF_NEIGHBOURS])
"""All 26 grid neighbours of a cell."""


def suggest_error_region(xyz: np.ndarray, confidence: np.ndarray, labels: np.ndarray,
                         cell_size: float, doubt: float = DOUBT_THRESHOLD,
                         clicked: np.ndarray | None = None
                         ) -> tuple[float, float, float] | None:
    """The point deepest inside the region the model most expects to have wrong.

    Args:
        xyz: (P, 3) float finite coordinates, metres.
        confidence: (P,) float probability of each point's predicted label, in [0, 1].
        labels: (P,) int predicted label per point (regions never mix two labels, as the
            simulator's error groups never mix two (truth, prediction) pairs).
        cell_size: edge (metres) of the grid cells the regions are built from (26-connected).
        doubt: points with ``1 - confidence >= doubt`` are candidates.
        clicked: (K, 3) positions of the clicks made so far, or None. Candidates in a cell
            next to a click (its cell and the 26 around it) are left out: the user has
            already given the label there, and a click that did not settle a region does
            not settle it the second time.

    Returns:
        (x, y, z) of a cloud point, or None when no point is in doubt.
    """
    error = 1.0 - np.nan_to_num(np.asarray(confidence, np.float64), nan=1.0)
    candidates = np.flatnonzero(error >= doubt)
    if candidates.size == 0:
        return None
    grid = np.floor(np.asarray(xyz, np.float64)[candidates] / cell_size).astype(np.int64)
    if clicked is not None and len(clicked):
        near = _near_clicks(grid, np.floor(np.asarray(clicked, np.float64).reshape(-1, 3)
                                           / cell_size).astype(np.int64))
        candidates, grid = candidates[~near], grid[~near]
        if candidates.size == 0:
            return None
    # one cell per (grid cell, predicted label), in lexicographic row order (a 1-D unique of
    # the rows' keys: the same cells as a row-wise unique, several times faster)
    keyed = np.concatenate([grid, np.asarray(labels, np.int64)[candidates, None]], axis=1)
    _, first, cell_of = np.unique(lexicographic_keys(torch.from_numpy(keyed)).numpy(),
                                  return_index=True, return_inverse=True)
    cells = keyed[first]
    mass = np.bincount(cell_of, weights=error[candidates])
    region_of_cell = _connected_cells(cells)
    region_mass = np.bincount(region_of_cell, weights=mass)
    best = int(np.argmax(region_mass))
    members = np.flatnonzero(region_of_cell == best)
    inside = _deepest_cell(cells[members, :3], members)
    points = candidates[cell_of == inside]
    chosen = points[int(np.argmax(error[points]))]
    return tuple(float(v) for v in np.asarray(xyz)[chosen])


def _near_clicks(grid: np.ndarray, click_cells: np.ndarray) -> np.ndarray:
    """(P,) bool: the cell of each row of ``grid`` is a click's cell or one of its 26
    neighbours."""
    offsets = np.concatenate([np.zeros((1, 3), np.int64), _ALL_NEIGHBOURS])  # cell + 26
    blocked = (click_cells[:, None, :] + offsets[None]).reshape(-1, 3)
    keys = lexicographic_keys(torch.from_numpy(np.concatenate([blocked, grid]))).numpy()
    return np.isin(keys[blocked.shape[0]:], keys[:blocked.shape[0]])


def _connected_cells(cells: np.ndarray) -> np.ndarray:
    """(C,) region index of each (x, y, z, label) cell (rows sorted as ``np.unique`` returns
    them): 26-connected, same label."""
    count = cells.shape[0]
    neighbour = _neighbours(cells, _HALF_NEIGHBOURS)
    found = neighbour >= 0
    rows = np.broadcast_to(np.arange(count), neighbour.shape)[found]
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, neighbour[found])),
                       shape=(count, count))
    return connected_components(graph, directed=False)[1]


def _neighbours(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(len(offsets), R) index of the row at each row + offset (offsets move the first three
    columns), -1 where there is none; ``rows`` unique and lexicographically sorted."""
    # Mixed-radix keys over the rows' bounding box grown by the largest offset: keys follow
    # the row order, and a moved row's key is its own key plus its offset's, so the moved rows
    # are never built.
    pad = np.zeros(rows.shape[1], np.int64)
    pad[:3] = np.abs(offsets).max(initial=0)
    low = rows.min(axis=0) - pad
    radix = np.array(key_radix(rows.max(axis=0) + pad - low + 1), np.int64)
    own = (rows - low) @ radix
    wanted = own[None] + (np.asarray(offsets, np.int64) @ radix[:3])[:, None]
    position = np.minimum(np.searchsorted(own, wanted), own.size - 1)
    return np.where(own[position] == wanted, position, -1)


def _deepest_cell(grid: np.ndarray, members: np.ndarray) -> int:
    """The member cell farthest from the region's border (cells with a missing neighbour):
    the simulator's 'deepest point' on the grid. Returns its index in ``members``' space."""
    if members.size <= 2:
        return int(members[0])
    border = (_neighbours(grid, _ALL_NEIGHBOURS) < 0).any(axis=0)
    if border.all():
        # a thin region (a surface one cell thick): the cell nearest its centroid
        centre = grid.mean(axis=0)
        return int(members[int(np.argmin(np.square(grid - centre).sum(axis=1)))])
    depth, _ = cKDTree(grid[border]).query(grid[~border])
    return int(members[np.flatnonzero(~border)[int(np.argmax(depth))]])


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

"""The field's click simulator (AGILE3D / NPISeg3D evaluation protocol), computed with KD-trees.

Errors are the points whose prediction differs from the ground truth, grouped by the pair
(ground-truth label, predicted label) -- not by connected component. A group's candidate click is
its point farthest from every point outside the group (max over the group of the distance to the
nearest point of the complement); that distance is the group's size. The click carries the
ground-truth label at that point.

The research code builds a dense |group| x |complement| distance matrix. Here every point belongs
to exactly one (gt, pred) partition; one KD-tree per partition is built once per call, and the
distance of a group point to the complement is the minimum over the trees of the other partitions.
That is the same number (tests compare against brute force) with O(N log N) time and O(N) memory.

Tie rules (documented in docs/evaluation.md): inside a group the lowest point index wins; between
groups of equal size the lexicographically smaller (gt, pred) pair wins. A group whose complement
is empty (the whole cloud is one error group) has size +inf and its lowest-index point is chosen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from npiseg_ros.eval.cloud import DatasetFormatError

__all__ = ["SimulatedClick", "candidate_clicks", "next_click", "initial_clicks"]


@dataclass(frozen=True)
class SimulatedClick:
    """A click chosen by the simulator.

    Attributes:
        point_index: index into the arrays given to the simulator.
        label: ground-truth label at that point (0 = background, k >= 1 = object k).
        predicted_label: the label the prediction had there.
        distance: the group's size: distance from the click to the nearest point outside its
            error group, in the units of ``xyz`` (metres); +inf when the complement is empty.
    """

    point_index: int
    label: int
    predicted_label: int
    distance: float


def _check(xyz: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    xyz = np.asarray(xyz, dtype=np.float64)
    gt = np.asarray(gt).astype(np.int64, copy=False).reshape(-1)
    pred = np.asarray(pred).astype(np.int64, copy=False).reshape(-1)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise DatasetFormatError(f"xyz must have shape (N, 3), got {xyz.shape}")
    if gt.shape[0] != xyz.shape[0] or pred.shape[0] != xyz.shape[0]:
        raise DatasetFormatError(
            f"xyz ({xyz.shape[0]} points), gt ({gt.shape[0]}) and pred ({pred.shape[0]}) "
            "must have the same length")
    return xyz, gt, pred


def candidate_clicks(xyz: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> list[SimulatedClick]:
    """One candidate click per (gt, pred) error group, largest group first.

    Args:
        xyz: (N, 3) float coordinates (metres) of the points the simulator works on.
        gt: (N,) int ground-truth labels (0 = background).
        pred: (N,) int predicted labels.

    Returns:
        One ``SimulatedClick`` per error group, sorted by decreasing size (ties: smaller
        (gt, pred) first). Empty when the prediction is perfect.
    """
    xyz, gt, pred = _check(xyz, gt, pred)
    if not np.any(gt != pred):
        return []
    # one integer key per (gt, pred) pair, ordered like the pairs themselves
    gt_offset, pred_offset = gt.min(), pred.min()
    span = int(pred.max() - pred_offset) + 1
    codes = (gt - gt_offset) * span + (pred - pred_offset)
    unique_codes, partition = np.unique(codes, return_inverse=True)
    keys = np.stack([unique_codes // span + gt_offset, unique_codes % span + pred_offset], 1)
    order = np.argsort(partition.reshape(-1), kind="stable")
    bounds = np.searchsorted(partition.reshape(-1)[order], np.arange(len(keys) + 1))
    members = [order[bounds[i]:bounds[i + 1]] for i in range(len(keys))]
    trees: dict[int, cKDTree] = {}

    def tree(index: int) -> cKDTree:
        if index not in trees:
            trees[index] = cKDTree(xyz[members[index]])
        return trees[index]

    clicks = []
    for group, (gt_label, pred_label) in enumerate(keys.tolist()):
        if gt_label == pred_label:
            continue
        others = sorted((i for i in range(len(keys)) if i != group),
                        key=lambda i: -len(members[i]))
        point_index, distance = _deepest_point(xyz, members[group], [tree(i) for i in others])
        clicks.append(SimulatedClick(point_index=point_index, label=int(gt_label),
                                     predicted_label=int(pred_label), distance=distance))
    # np.unique sorted the keys lexicographically and sort() is stable: ties keep (gt, pred) order.
    clicks.sort(key=lambda click: -click.distance)
    return clicks


def _deepest_point(xyz: np.ndarray, group: np.ndarray,
                   other_trees: list[cKDTree]) -> tuple[int, float]:
    """argmax over ``group`` (sorted point indices) of the distance to the nearest point in
    ``other_trees`` (the complement), first maximum on ties; returns (point index, distance).

    Exact with pruning: after each tree, the current candidate's exact distance v is a lower
    bound of the answer, and every point whose running minimum is already below v cannot win.
    """
    candidates = group
    nearest = np.full(len(group), np.inf)
    for position, other in enumerate(other_trees):
        bound = float(nearest.max())
        distance, _ = other.query(xyz[candidates], k=1,
                                  distance_upper_bound=bound * (1 + 1e-9) + 1e-12
                                  if np.isfinite(bound) else np.inf)
        np.minimum(nearest, distance, out=nearest)
        if position + 1 == len(other_trees):
            break
        best = int(np.argmax(nearest))
        exact = nearest[best]
        for rest in other_trees[position + 1:]:
            exact = min(exact, rest.query(xyz[candidates[best]], k=1)[0])
        keep = nearest >= exact
        candidates, nearest = candidates[keep], nearest[keep]
    if not other_trees:
        return int(group[0]), float("inf")
    best = int(np.argmax(nearest))
    return int(candidates[best]), float(nearest[best])


def next_click(xyz: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> SimulatedClick | None:
    """The next corrective click: the candidate of the single largest error group scene-wide.

    Args:
        xyz: (N, 3) float coordinates, metres.
        gt: (N,) int ground-truth labels.
        pred: (N,) int current prediction.

    Returns:
        The click, or None when the prediction equals the ground truth everywhere.
    """
    clicks = candidate_clicks(xyz, gt, pred)
    return clicks[0] if clicks else None


def initial_clicks(xyz: np.ndarray, gt: np.ndarray) -> list[SimulatedClick]:
    """Round 0 of the multi-object protocol: one click on every target object.

    The prediction before any click is all background, so each object is one error group
    (object, 0) and gets one click at its point deepest inside it. Sorted by object label.

    Args:
        xyz: (N, 3) float coordinates, metres.
        gt: (N,) int ground-truth labels, 0 = background, 1..K = target objects.
    """
    gt = np.asarray(gt)
    clicks = candidate_clicks(xyz, gt, np.zeros_like(gt))
    return sorted(clicks, key=lambda click: click.label)

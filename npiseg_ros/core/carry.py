"""Carry a segmentation from one sweep to the next without running the network.

A LiDAR on a robot sends a sweep every 100 ms; the encoder needs several times that on two CPU
cores. Between two encodes each new sweep is labelled from the last segmented one:

1. the previous sweep is moved into the new sweep's frame by the ego motion (tf / odometry
   between the two stamps, or :func:`rigid_align` of the two sweeps when none is given);
2. every object is then aligned on its own (:func:`rigid_align` of the object's points against
   the new points around it, rotation about z only), so a car that drives keeps its label;
3. each new point takes the label of its nearest moved previous point, when that point is close
   enough (:data:`SUPPORT_M`, growing with range like the gaps between laser rings), else it
   is unsupported (-1: the caller shows it as unknown until the next encode).

Each step looks only at the points around an object: both sweeps are bucketed once into
:data:`GRID_CELL_M` columns (:class:`_ColumnIndex`), so the cost grows with the objects, not with
the sweep (``benchmarks/bench_carry.py``: six cars on the bundled 124k-point sweep, one core).

Pure numpy + scipy (no torch, no ROS), for the node's follow mode (issue 21) and the
labelling tool's tracking (issue 24). Transforms are 4x4 float64 matrices mapping
previous-frame points into the new frame (``x_new = T @ x_prev``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["AlignResult", "CarriedLabels", "rigid_align", "carry_labels", "transform_points",
           "finite_rows", "build_tree"]

SUPPORT_M = 0.3
"""A new point takes a carried label when a moved previous point lies this close (metres at
the sensor; the bound grows with range by :data:`SUPPORT_PER_M`)."""

SUPPORT_PER_M = 0.01
"""Extra support distance per metre of range (a 64-ring LiDAR's vertical spacing at 30 m is
~0.2 m)."""

OBJECT_SEARCH_M = 2.5
"""How far an object may move between two sweeps (25 m/s at 10 Hz)."""

MIN_INLIER_RATIO = 0.5
"""An object's own alignment is kept only when at least this share of its points found a
partner in the new sweep (else it is moved by the ego motion alone)."""

EGO_ITERATIONS = 28
EGO_FINE_ITERATIONS = 4
"""The ego motion estimated without tf (:func:`_estimate_ego`): iterations in all, and the last
ones, which use all the sampled points (the others a fifth of them)."""

TRACK_POINTS = 400
"""An object's own motion is fitted on at most this many of its points (every k-th: a LiDAR's
points come ring by ring, so they stay spread over the object); more only add cost."""

GRID_CELL_M = 3.0
"""Side of the x-y columns a sweep is bucketed into for the ball queries around the objects
(about the radius of those balls: a query visits 3 x 3 to 5 x 5 columns)."""

_GRID_SIDE = 256
"""Columns per axis (+-384 m at 3 m; farther points share the border columns): 256 x 256 keys
fit in 16 bits, which numpy sorts with a radix sort (~0.5 ms for a whole sweep)."""


@dataclass(frozen=True)
class AlignResult:
    """A rigid alignment of a source cloud onto a target cloud.

    Attributes:
        transform: (4, 4) float64 source -> target.
        inlier_ratio: share of source points with a target point within the pairing distance
            at the last iteration.
        rmse: root mean square distance of those pairs, metres.
    """

    transform: np.ndarray
    inlier_ratio: float
    rmse: float


@dataclass(frozen=True)
class CarriedLabels:
    """Labels of a new sweep carried from the previous one.

    Attributes:
        labels: (N,) int64 object id per new point (0 = background), -1 = unsupported.
        distance: (N,) float32 distance to the moved previous point that gave the label, metres.
        ego: (4, 4) float64 previous -> new sweep transform that was used.
        object_motion: object id -> (4, 4) float64 transform of that object's previous points
            into the new frame (ego motion composed with the object's own motion).
    """

    labels: np.ndarray
    distance: np.ndarray
    ego: np.ndarray
    object_motion: dict[int, np.ndarray] = field(default_factory=dict)


def transform_points(transform: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(N, 3) points mapped by a (4, 4) transform, float64."""
    xyz = np.asarray(xyz, np.float64)
    return xyz @ np.asarray(transform, np.float64)[:3, :3].T + transform[:3, 3]


def _yaw_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rigid transform (rotation about z + translation) of paired points."""
    source_centre = source.mean(axis=0)
    target_centre = target.mean(axis=0)
    a = source[:, :2] - source_centre[:2]
    b = target[:, :2] - target_centre[:2]
    angle = np.arctan2(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]),
                       np.sum(a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]))
    c, s = np.cos(angle), np.sin(angle)
    transform = np.eye(4)
    transform[:2, :2] = [[c, -s], [s, c]]
    transform[:3, 3] = target_centre - transform[:3, :3] @ source_centre
    return transform


def _full_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares rigid transform (any rotation, Kabsch) of paired points."""
    source_centre = source.mean(axis=0)
    target_centre = target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - source_centre).T @ (target - target_centre))
    correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(vt.T @ u.T))])
    rotation = vt.T @ correction @ u.T
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = target_centre - rotation @ source_centre
    return transform


def rigid_align(source: np.ndarray, target: np.ndarray, initial: np.ndarray | None = None, *,
                iterations: int = 20, max_pair_m: float = 1.0, yaw_only: bool = True,
                target_tree: cKDTree | None = None,
                final_pair_m: float | None = None) -> AlignResult:
    """Point-to-point ICP of ``source`` (S, 3) onto ``target`` (T, 3), metres.

    Pairs farther than ``max_pair_m`` are ignored; the pairing distance shrinks linearly to
    ``final_pair_m`` (default a third of it) over the iterations so the last ones refine on
    close pairs only (two calls with matching distances run one schedule in two parts, e.g.
    on fewer points first). ``yaw_only`` keeps the rotation about z (ground vehicles and a
    level sensor), which is better conditioned on the few points of a distant object.
    ``target_tree``: :func:`build_tree` of ``target``, for several alignments with one target.
    """
    transform = np.eye(4) if initial is None else np.asarray(initial, np.float64).copy()
    source = np.asarray(source, np.float64)
    if source.shape[0] < 3 or np.asarray(target).shape[0] < 3:
        return AlignResult(transform, 0.0, float("inf"))
    tree = build_tree(target) if target_tree is None else target_tree
    fit = _yaw_fit if yaw_only else _full_fit
    shrink = max_pair_m - (max_pair_m / 3.0 if final_pair_m is None else final_pair_m)
    ratio, rmse = 0.0, float("inf")
    for iteration in range(iterations):
        limit = max_pair_m - shrink * iteration / max(iterations - 1, 1)
        moved = transform_points(transform, source)
        distance, index = tree.query(moved, distance_upper_bound=limit)
        paired = np.isfinite(distance)
        ratio = float(paired.mean())
        if paired.sum() < 3:
            break
        rmse = float(np.sqrt(np.mean(np.square(distance[paired]))))
        step = fit(moved[paired], tree.data[index[paired]])
        transform = step @ transform
        if np.abs(step[:3, 3]).max() < 1e-4 and np.abs(step[:3, :3] - np.eye(3)).max() < 1e-6:
            break
    return AlignResult(transform, ratio, rmse)


def build_tree(xyz: np.ndarray) -> cKDTree:
    """A k-d tree of (M, 3) points for :func:`rigid_align`'s ``target_tree`` (one tree for
    several alignments with the same target): split at the midpoint, not the median, which
    builds in half the time and answers the same queries."""
    return cKDTree(np.asarray(xyz, np.float64), balanced_tree=False, compact_nodes=False)


def finite_rows(xyz: np.ndarray) -> np.ndarray:
    """(N,) bool: rows with three finite coordinates (one column at a time: ~20x faster than
    ``np.isfinite(xyz).all(axis=1)``)."""
    xyz = np.asarray(xyz)
    return np.isfinite(xyz[:, 0]) & np.isfinite(xyz[:, 1]) & np.isfinite(xyz[:, 2])


def _support_bound(xyz: np.ndarray) -> np.ndarray:
    return SUPPORT_M + SUPPORT_PER_M * np.linalg.norm(xyz[:, :2], axis=1)


class _ColumnIndex:
    """The valid points of a sweep sorted by their :data:`GRID_CELL_M` x-y column, so that a
    ball query reads only the columns the ball overlaps (a few thousand points) instead of the
    whole sweep: built once per sweep in ~2 ms, each query well under a millisecond."""

    def __init__(self, xyz: np.ndarray, valid: np.ndarray) -> None:
        self.xyz = xyz
        points = np.flatnonzero(valid)
        columns = self._columns(xyz[:, :2])      # whole columns: cheaper than gathering rows
        keys = (columns[:, 0] * _GRID_SIDE + columns[:, 1])[points].astype(np.uint16)
        order = np.argsort(keys, kind="stable")      # a radix sort of 16-bit keys
        self._points = points[order]
        self._starts = np.zeros(_GRID_SIDE * _GRID_SIDE + 1, np.int64)
        np.cumsum(np.bincount(keys, minlength=_GRID_SIDE * _GRID_SIDE), out=self._starts[1:])

    @staticmethod
    def _columns(xy: np.ndarray) -> np.ndarray:
        """(M, 2) float32 column index (0 .. ``_GRID_SIDE`` - 1) of each x, y; non-finite rows
        stay NaN. Far points are clipped to the border columns, which the queries that reach
        them read whole."""
        with np.errstate(over="ignore"):    # beyond float32: inf, clipped like any far point
            columns = np.floor(np.asarray(xy, np.float32) * np.float32(1.0 / GRID_CELL_M))
        np.clip(columns, -(_GRID_SIDE // 2), _GRID_SIDE // 2 - 1, out=columns)
        columns += _GRID_SIDE // 2
        return columns

    def within(self, centre: np.ndarray, radius: float) -> np.ndarray:
        """Ascending indices of the valid points inside the ball (as ``_within`` decides)."""
        # a centimetre of slack: the exact test below decides, the columns only must not miss
        reach = radius + 0.01
        low, high = self._columns(np.array([centre[:2] - reach, centre[:2] + reach])).astype(int)
        first = low[0] * _GRID_SIDE + np.arange(high[0] - low[0] + 1) * _GRID_SIDE + low[1]
        spans = [self._points[self._starts[key]:self._starts[key + high[1] - low[1] + 1]]
                 for key in first.tolist()]
        near = np.sort(np.concatenate(spans)) if spans else np.zeros(0, np.int64)
        return near[_within(self.xyz[near], centre, radius)]


def _object_members(labels: np.ndarray, usable: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(object id, ascending indices of its usable points) of every object (id > 0), from one
    sort of the objects' points rather than one pass over the sweep per object."""
    inside = np.flatnonzero(usable & (labels > 0))
    if inside.size == 0:
        return []
    inside = inside[np.argsort(labels[inside], kind="stable")]
    ids = labels[inside]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], ids.size]
    return [(int(ids[start]), inside[start:end]) for start, end in zip(starts, ends)]


def carry_labels(previous_xyz: np.ndarray, previous_labels: np.ndarray, xyz: np.ndarray,
                 ego: np.ndarray | None = None, *, track_objects: bool = True,
                 max_sweep_points: int = 5000) -> CarriedLabels:
    """Label the new sweep ``xyz`` (N, 3) from the previous sweep and its labels.

    Only the neighbourhood of each object is searched (a ball around it, ``OBJECT_SEARCH_M``
    larger than the object): the rest of the sweep is background, as it was. So the cost grows
    with the objects' sizes, not with the sweep.

    Args:
        previous_xyz: (P, 3) float previous sweep, its own frame, metres.
        previous_labels: (P,) int object id per previous point (0 = background; negative =
            unknown, never carried).
        xyz: (N, 3) float new sweep, its own frame, metres. Non-finite rows get -1.
        ego: (4, 4) previous -> new frame transform (tf between the two stamps); None
            estimates it by aligning the two sweeps (at most ``max_sweep_points`` of each).
        track_objects: align every object on its own after the ego motion.
    """
    previous_labels = np.asarray(previous_labels, np.int64)
    previous_xyz, xyz = np.asarray(previous_xyz), np.asarray(xyz)
    if previous_xyz.shape[0] != previous_labels.shape[0]:
        raise ValueError(f"{previous_xyz.shape[0]} previous points but "
                         f"{previous_labels.shape[0]} labels")
    if ego is not None and np.asarray(ego).shape != (4, 4):
        raise ValueError(f"ego must be a 4x4 transform, got shape {np.asarray(ego).shape}")
    finite = finite_rows(xyz)
    labels = np.where(finite, 0, -1).astype(np.int64)
    distance = np.full(labels.shape[0], np.inf, np.float32)
    usable = finite_rows(previous_xyz) & (previous_labels >= 0)
    if ego is None:
        ego = (np.eye(4) if not finite.any() or not usable.any() else
               _estimate_ego(previous_xyz[usable], previous_labels[usable], xyz[finite],
                             max_sweep_points))
    ego = np.asarray(ego, np.float64)
    objects = _object_members(previous_labels, usable)
    motions: dict[int, np.ndarray] = {}
    if not objects:
        return CarriedLabels(labels, distance, ego, motions)
    new_index, previous_index = _ColumnIndex(xyz, finite), _ColumnIndex(previous_xyz, usable)
    for object_id, members in objects:
        member_xyz = previous_xyz[members].astype(np.float64)
        centre = member_xyz.mean(axis=0)
        radius = float(np.linalg.norm(member_xyz - centre, axis=1).max())
        moved_members = transform_points(ego, member_xyz)
        moved_centre = transform_points(ego, centre[None])[0]
        reach = radius + OBJECT_SEARCH_M + SUPPORT_M + SUPPORT_PER_M * float(
            np.linalg.norm(moved_centre[:2]))
        around = new_index.within(moved_centre, reach)
        own = np.eye(4)
        if track_objects and around.size:
            own = _track_object(moved_members, xyz[around].astype(np.float64))
        motions[object_id] = own @ ego
        moved_members = transform_points(own, moved_members)
        new_centre = moved_members.mean(axis=0)
        candidates = new_index.within(new_centre, radius + SUPPORT_M)
        # the moved object and the moved previous points around it (background, other
        # objects) compete for the new points near it: the nearest moved point labels each
        context = previous_index.within(centre, reach)
        if candidates.size == 0 or context.size == 0:
            continue
        context_xyz = transform_points(ego, previous_xyz[context])
        is_member = previous_labels[context] == object_id
        context_xyz[is_member] = transform_points(own, context_xyz[is_member])
        candidate_xyz = xyz[candidates].astype(np.float64)
        bound = _support_bound(candidate_xyz)
        # a moved point farther than the largest bound from every candidate labels none (a
        # millimetre of slack for the float32 ball tests)
        limit = float(bound.max()) + 1e-3
        near = np.flatnonzero(_within(context_xyz, new_centre, radius + SUPPORT_M + limit))
        if near.size == 0:
            continue
        tree = build_tree(context_xyz[near])
        nearest, index = tree.query(candidate_xyz, distance_upper_bound=limit)
        take = (nearest <= bound) & (nearest < distance[candidates])
        source = near[index[take]]
        labels[candidates[take]] = np.where(is_member[source], object_id,
                                            previous_labels[context[source]])
        distance[candidates[take]] = nearest[take].astype(np.float32)
    return CarriedLabels(labels, distance, ego, motions)


def _within(xyz: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: points inside the ball (non-finite rows are False)."""
    offset = np.asarray(xyz) - centre.astype(np.float32)
    return np.einsum("ij,ij->i", offset, offset) <= radius * radius


def _estimate_ego(source_xyz: np.ndarray, source_labels: np.ndarray, new_points: np.ndarray,
                  max_points: int) -> np.ndarray:
    """Previous -> new transform from the static part of the two sweeps (objects may move).

    Up to ``max_points`` static previous points are aligned with up to twice as many new ones
    in :data:`EGO_ITERATIONS` iterations, pairs from 2 m apart down to 0.67 m; all but the last
    :data:`EGO_FINE_ITERATIONS` use a fifth of the points. Half the time of 20 iterations of
    all of them, and as exact: a sweep in a street, where few points pin the motion along it,
    gains more from the extra iterations than it loses from the smaller sample."""
    rng = np.random.default_rng(0)
    static = source_xyz[source_labels == 0]
    if static.shape[0] < 100:
        static = source_xyz
    if static.shape[0] > max_points:
        static = static[rng.choice(static.shape[0], max_points, replace=False)]
    target = new_points
    if target.shape[0] > 2 * max_points:
        target = target[rng.choice(target.shape[0], 2 * max_points, replace=False)]
    tree = build_tree(target)
    pair_m = np.linspace(2.0, 2.0 / 3.0, EGO_ITERATIONS)
    coarse = EGO_ITERATIONS - EGO_FINE_ITERATIONS
    result = rigid_align(static[:max(max_points // 5, 3)], target, iterations=coarse,
                         max_pair_m=pair_m[0], final_pair_m=pair_m[coarse - 1], yaw_only=False,
                         target_tree=tree)
    result = rigid_align(static, target, result.transform, iterations=EGO_FINE_ITERATIONS,
                         max_pair_m=pair_m[coarse], final_pair_m=pair_m[-1], yaw_only=False,
                         target_tree=tree)
    return result.transform


def _track_object(points: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The object's own motion after the ego motion, from the new points ``candidates``
    around it (identity when it cannot be trusted); fitted on at most :data:`TRACK_POINTS` of
    the object's ``points``."""
    if points.shape[0] < 10 or candidates.shape[0] < 10:
        return np.eye(4)
    points = points[::-(-points.shape[0] // TRACK_POINTS)]    # every k-th, k rounded up
    tree = build_tree(candidates)
    result = rigid_align(points, candidates, iterations=30, max_pair_m=OBJECT_SEARCH_M / 2,
                         yaw_only=True, target_tree=tree)
    still = rigid_align(points, candidates, iterations=1, max_pair_m=0.3, target_tree=tree)
    moved_fit = rigid_align(transform_points(result.transform, points), candidates,
                            iterations=1, max_pair_m=0.3, target_tree=tree)
    # keep the motion only when it explains the object's new points better than standing still
    if result.inlier_ratio < MIN_INLIER_RATIO or moved_fit.inlier_ratio <= still.inlier_ratio:
        return np.eye(4)
    return result.transform

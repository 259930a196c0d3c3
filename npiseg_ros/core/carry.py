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

Pure numpy + scipy (no torch, no ROS), for the node's follow mode (issue 21) and the
labelling tool's tracking (issue 24). Transforms are 4x4 float64 matrices mapping previous-frame points into the
new frame (``x_new = T @ x_prev``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["AlignResult", "CarriedLabels", "rigid_align", "carry_labels", "transform_points"]

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
                target_tree: cKDTree | None = None) -> AlignResult:
    """Point-to-point ICP of ``source`` (S, 3) onto ``target`` (T, 3), metres.

    Pairs farther than ``max_pair_m`` are ignored; the pairing distance shrinks to a third of
    it over the iterations so the last ones refine on close pairs only. ``yaw_only`` keeps
    the rotation about z (ground vehicles and a level sensor), which is better conditioned on
    the few points of a distant object.
    """
    transform = np.eye(4) if initial is None else np.asarray(initial, np.float64).copy()
    source = np.asarray(source, np.float64)
    if source.shape[0] < 3 or np.asarray(target).shape[0] < 3:
        return AlignResult(transform, 0.0, float("inf"))
    tree = cKDTree(np.asarray(target, np.float64)) if target_tree is None else target_tree
    fit = _yaw_fit if yaw_only else _full_fit
    ratio, rmse = 0.0, float("inf")
    for iteration in range(iterations):
        limit = max_pair_m * (1.0 - (2.0 / 3.0) * iteration / max(iterations - 1, 1))
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


def _support_bound(xyz: np.ndarray) -> np.ndarray:
    return SUPPORT_M + SUPPORT_PER_M * np.linalg.norm(xyz[:, :2], axis=1)


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
    if np.shape(previous_xyz)[0] != previous_labels.shape[0]:
        raise ValueError(f"{np.shape(previous_xyz)[0]} previous points but "
                         f"{previous_labels.shape[0]} labels")
    if ego is not None and np.asarray(ego).shape != (4, 4):
        raise ValueError(f"ego must be a 4x4 transform, got shape {np.asarray(ego).shape}")
    finite = np.isfinite(xyz).all(axis=1)
    labels = np.where(finite, 0, -1).astype(np.int64)
    distance = np.full(labels.shape[0], np.inf, np.float32)
    usable = np.isfinite(previous_xyz).all(axis=1) & (previous_labels >= 0)
    object_ids = np.unique(previous_labels[usable & (previous_labels > 0)])
    if ego is None:
        ego = (np.eye(4) if not finite.any() or not usable.any() else
               _estimate_ego(np.asarray(previous_xyz)[usable], previous_labels[usable],
                             np.asarray(xyz)[finite], max_sweep_points))
    ego = np.asarray(ego, np.float64)
    motions: dict[int, np.ndarray] = {}
    for object_id in object_ids:
        members = np.flatnonzero(previous_labels == object_id)
        member_xyz = np.asarray(previous_xyz)[members].astype(np.float64)
        centre = member_xyz.mean(axis=0)
        radius = float(np.linalg.norm(member_xyz - centre, axis=1).max())
        moved_members = transform_points(ego, member_xyz)
        moved_centre = transform_points(ego, centre[None])[0]
        reach = radius + OBJECT_SEARCH_M + SUPPORT_M + SUPPORT_PER_M * float(
            np.linalg.norm(moved_centre[:2]))
        around = _within(xyz, moved_centre, reach) & finite
        own = np.eye(4)
        if track_objects and around.any():
            own = _track_object(moved_members, np.asarray(xyz)[around].astype(np.float64))
        motions[int(object_id)] = own @ ego
        moved_members = transform_points(own, moved_members)
        # the moved object and the moved previous points around it (background, other
        # objects) compete for the new points near it: the nearest moved point labels each
        context = np.flatnonzero(_within(previous_xyz, centre, reach) & usable)
        context_xyz = transform_points(ego, np.asarray(previous_xyz)[context].astype(np.float64))
        is_member = np.isin(context, members)
        context_xyz[is_member] = transform_points(own, context_xyz[is_member])
        new_centre = moved_members.mean(axis=0)
        candidates = np.flatnonzero(_within(xyz, new_centre, radius + SUPPORT_M) & finite)
        if candidates.size == 0 or context.size == 0:
            continue
        candidate_xyz = np.asarray(xyz)[candidates].astype(np.float64)
        nearest, index = cKDTree(context_xyz).query(candidate_xyz)
        take = (nearest <= _support_bound(candidate_xyz)) & (nearest < distance[candidates])
        labels[candidates[take]] = np.where(is_member[index[take]], object_id,
                                            previous_labels[context[index[take]]])
        distance[candidates[take]] = nearest[take].astype(np.float32)
    return CarriedLabels(labels, distance, ego, motions)


def _within(xyz: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: points inside the ball (non-finite rows are False)."""
    offset = np.asarray(xyz) - centre.astype(np.float32)
    return np.einsum("ij,ij->i", offset, offset) <= radius * radius


def _estimate_ego(source_xyz: np.ndarray, source_labels: np.ndarray, new_points: np.ndarray,
                  max_points: int) -> np.ndarray:
    """Previous -> new transform from the static part of the two sweeps (objects may move)."""
    rng = np.random.default_rng(0)
    static = source_xyz[source_labels == 0]
    if static.shape[0] < 100:
        static = source_xyz
    if static.shape[0] > max_points:
        static = static[rng.choice(static.shape[0], max_points, replace=False)]
    target = new_points
    if target.shape[0] > 2 * max_points:
        target = target[rng.choice(target.shape[0], 2 * max_points, replace=False)]
    coarse = rigid_align(static, target, iterations=20, max_pair_m=2.0, yaw_only=False)
    return coarse.transform


def _track_object(points: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The object's own motion after the ego motion, from the new points ``candidates``
    around it (identity when it cannot be trusted)."""
    if points.shape[0] < 10 or candidates.shape[0] < 10:
        return np.eye(4)
    tree = cKDTree(candidates)
    result = rigid_align(points, candidates, iterations=30, max_pair_m=OBJECT_SEARCH_M / 2,
                         yaw_only=True, target_tree=tree)
    still = rigid_align(points, candidates, iterations=1, max_pair_m=0.3, target_tree=tree)
    moved_fit = rigid_align(transform_points(result.transform, points), candidates,
                            iterations=1, max_pair_m=0.3, target_tree=tree)
    # keep the motion only when it explains the object's new points better than standing still
    if result.inlier_ratio < MIN_INLIER_RATIO or moved_fit.inlier_ratio <= still.inlier_ratio:
        return np.eye(4)
    return result.transform

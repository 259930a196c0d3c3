"""LiDAR odometry for follow mode: the pose of a sweep when tf gives none.

Each sweep newer than every one aligned so far is aligned with the newest of them (carry's
:func:`~npiseg_ros.core.carry.rigid_align` of the static points of that sweep, started at
constant velocity and at rest); an older sweep gets the pose interpolated between the poses
known around its stamp. Poses are (4, 4) float64 matrices, fixed frame <- sensor frame at the
sweep's stamp (``x_fixed = pose @ x_sensor``, metres); stamps are seconds. No ROS and no
PyTorch (numpy + scipy through ``core.carry``), thread safe.
"""
from __future__ import annotations

import bisect
import threading

import numpy as np

from npiseg_ros.core.carry import build_tree, finite_rows, rigid_align

__all__ = ["LidarOdometry"]

ALIGN_SOURCE_POINTS = 2000
"""Static points of the previous sweep the odometry aligns (:func:`_static_sample`)."""

ALIGN_TARGET_POINTS = 15000
"""New-sweep points the odometry pairs them with (every k-th: a sparser target biases the
pairs on a LiDAR's uneven sampling)."""

ALIGN_MIN_INLIERS = 0.5
"""An odometry alignment with fewer paired points than this share is tried again from its
result with a wider pairing distance and more iterations; the better of the two is kept."""

GROUND_CELL_M = 1.0
GROUND_CLEARANCE_M = 0.3
"""Points less than this above the lowest point of their ground cell count as ground."""

GROUND_SHARE = 0.5
"""Largest share of ground points in the ego alignment's sample (:func:`_static_sample`)."""

POSE_HISTORY = 64
"""Sweep poses kept for predicting the pose of the next one (the warm start of alignment)."""


class LidarOdometry:
    """The recent sweep poses and the newest sweep aligned without tf (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._poses: list[tuple[float, np.ndarray]] = []   # recent (stamp, pose), by stamp
        # the newest sweep aligned without tf: (stamp, pose, its static sample)
        self._newest: tuple[float, np.ndarray, np.ndarray] | None = None

    def clear(self) -> None:
        """Forget every pose (a new stream)."""
        with self._lock:
            self._poses, self._newest = [], None

    def start(self, stamp: float, pose: np.ndarray, xyz: np.ndarray,
              labels: np.ndarray) -> None:
        """Remember a decoded sweep's pose; the first one starts the chain of alignments.

        Args:
            stamp: seconds.
            pose: (4, 4) float64 fixed <- sensor.
            xyz: (N, 3) float32 the sweep's points, metres, its sensor frame (NaN rows allowed).
            labels: (N,) int64 object ids (0 = background: what the alignment holds on to).
        """
        with self._lock:
            self._remember(float(stamp), pose)
            if self._newest is None:
                self._newest = (float(stamp), pose,
                                _static_sample(xyz, labels, ALIGN_SOURCE_POINTS))

    def record(self, stamp: float, pose: np.ndarray, xyz: np.ndarray | None = None,
               labels: np.ndarray | None = None) -> None:
        """Remember a carried sweep's pose; with its points and labels (a sweep aligned
        without tf), it becomes the one the next sweep is aligned with if it is the newest."""
        with self._lock:
            self._remember(float(stamp), pose)
            newest = self._newest is None or stamp > self._newest[0]
        if xyz is None or not newest:
            return
        sample = _static_sample(xyz, labels, ALIGN_SOURCE_POINTS)   # outside the lock: ms
        with self._lock:
            if self._newest is None or stamp > self._newest[0]:
                self._newest = (float(stamp), pose, sample)

    def pose(self, xyz: np.ndarray, stamp: float) -> np.ndarray | None:
        """The pose of the sweep ``xyz`` ((N, 3), its sensor frame) at ``stamp`` seconds.

        A sweep newer than every one aligned so far is aligned with the newest of them:
        0.1-0.3 s of motion, well conditioned even along a street, where aligning with a
        reference a second or two old slides along the facades. An older sweep (the one the
        worker encodes, the sweep on screen answered again) is placed between the poses known
        around its stamp. None before two poses are known (``carry_labels`` then aligns from
        scratch) and for an older sweep outside the poses known.
        """
        with self._lock:
            last, poses = self._newest, list(self._poses)
        if last is None or stamp <= last[0]:
            return _interpolate(poses, stamp)
        # two starts: constant velocity, and no motion since the newest (a stop, a reversal,
        # or a long gap after a busy spell make the first one wrong); the better fit wins
        guess = _extrapolate([p for p in poses if p[0] <= last[0]], stamp)
        if guess is None:       # no motion known yet: carry_labels' own, wider alignment
            return None
        finite = np.flatnonzero(finite_rows(xyz))
        if last[2].shape[0] < 3 or finite.size < 3:
            return None
        if finite.size > ALIGN_TARGET_POINTS:
            finite = finite[:: finite.size // ALIGN_TARGET_POINTS + 1]   # spread, fixed
        target = np.asarray(xyz)[finite]
        starts = [np.eye(4), np.linalg.inv(guess) @ last[1]]
        tree = build_tree(target)   # one k-d tree for every alignment below
        results = [rigid_align(last[2], target, start, iterations=8, max_pair_m=1.0,
                               yaw_only=False, target_tree=tree) for start in starts]
        result = max(results, key=lambda fit: fit.inlier_ratio)
        if result.inlier_ratio < ALIGN_MIN_INLIERS:   # maybe off: a wider search
            wide = rigid_align(last[2], target, result.transform, iterations=20,
                               max_pair_m=2.0, yaw_only=False, target_tree=tree)
            if wide.inlier_ratio > result.inlier_ratio:
                result = wide
        return last[1] @ np.linalg.inv(result.transform)

    def _remember(self, stamp: float, pose: np.ndarray) -> None:
        """Keep the sweep's pose (the last :data:`POSE_HISTORY`, in stamp order); under the
        lock."""
        stamps = [known for known, _ in self._poses]
        at = bisect.bisect_left(stamps, stamp)
        if at < len(stamps) and stamps[at] == stamp:
            self._poses[at] = (stamp, pose)
        else:
            self._poses.insert(at, (stamp, pose))
        del self._poses[:-POSE_HISTORY]


def _between(before: np.ndarray, after: np.ndarray, ratio: float) -> np.ndarray:
    """The pose ``ratio`` of the way from ``before`` to ``after`` (translation and yaw; beyond
    them for a ratio outside [0, 1])."""
    delta = np.linalg.inv(before) @ after
    yaw = ratio * np.arctan2(delta[1, 0], delta[0, 0])
    step = np.eye(4)
    step[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    step[:3, 3] = ratio * delta[:3, 3]
    return before @ step


def _interpolate(poses: list[tuple[float, np.ndarray]], stamp: float) -> np.ndarray | None:
    """The pose at ``stamp`` between the two known poses around it (the known pose itself at
    its stamp); None outside the poses known."""
    stamps = [known for known, _ in poses]
    at = bisect.bisect_left(stamps, stamp)
    if at < len(stamps) and stamps[at] == stamp:
        return poses[at][1]
    if at == 0 or at == len(stamps):
        return None
    (before_stamp, before), (after_stamp, after) = poses[at - 1], poses[at]
    return _between(before, after, (stamp - before_stamp) / (after_stamp - before_stamp))


def _extrapolate(poses: list[tuple[float, np.ndarray]], stamp: float) -> np.ndarray | None:
    """The pose at ``stamp`` after the newest known pose, at the constant velocity of the last
    two (at most 3 of their intervals ahead); None with fewer than two."""
    if len(poses) < 2 or poses[-1][0] <= poses[-2][0]:
        return None
    (before_stamp, before), (after_stamp, after) = poses[-2], poses[-1]
    ratio = min((stamp - before_stamp) / (after_stamp - before_stamp), 4.0)
    return _between(before, after, ratio)


def _static_sample(xyz: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` finite background points, evenly spread, at most
    :data:`GROUND_SHARE` of them on the ground: what an alignment can hold on to. Objects may
    move; the ground is a plane that pairs with itself wherever the sweep is, so with the
    ground's usual share of a sweep most pairs would vote for "no motion" and the alignment
    would lag behind the sensor and slide along the street (it still pins height and tilt)."""
    finite = finite_rows(xyz)
    usable = np.flatnonzero(finite & (labels == 0))
    if usable.size < 100:
        usable = np.flatnonzero(finite)
    if usable.size > 4 * count:     # enough for the ground heights, then the sample
        usable = usable[:: usable.size // (4 * count) + 1]
    points = np.asarray(xyz)[usable]
    raised = _above_ground(points)
    ground_count = int(count * GROUND_SHARE)
    parts = [points[raised], points[~raised]]
    budgets = [count - min(ground_count, parts[1].shape[0]), ground_count]
    parts = [part[:: part.shape[0] // budget + 1] if part.shape[0] > budget > 0 else part
             for part, budget in zip(parts, budgets)]
    return np.concatenate(parts).astype(np.float64)


def _above_ground(xyz: np.ndarray) -> np.ndarray:
    """(N,) bool: points more than :data:`GROUND_CLEARANCE_M` above the lowest point of their
    :data:`GROUND_CELL_M` column."""
    cells = np.floor(xyz[:, :2] / GROUND_CELL_M).astype(np.int64)
    keys = cells[:, 0] * 4_194_304 + cells[:, 1]   # +-2^21 cells per axis: no collision
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    lowest = np.minimum.reduceat(xyz[order, 2], starts)
    return xyz[:, 2] > lowest[np.searchsorted(unique, keys)] + GROUND_CLEARANCE_M

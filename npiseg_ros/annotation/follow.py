"""Follow a sensor stream between encodes: label each new sweep from the last segmented one.

The encoder needs several times a LiDAR's 100 ms per sweep on two CPU cores, so a node that
follows a live sensor encodes only some sweeps (the newest one each time the last encode is
done) and answers the others by carrying the labels of the last segmented sweep, the
*reference*, with :func:`npiseg_ros.core.carry.carry_labels`. This module holds that reference
and everything that moves with it; no ROS and no PyTorch (numpy + scipy), thread safe.

Frames and transforms (4x4 float64 matrices, ``x_to = T @ x_from``, metres):

* every sweep has a *pose*, fixed frame <- sensor frame at the sweep's stamp: from tf when the
  caller has it, else by LiDAR odometry - each new sweep aligned with the newest one aligned
  before (``ego_fallback="align"``, carry's ICP; :class:`~.odometry.LidarOdometry`) - or the
  reference's own (``"static"``). Without any tf the fixed frame is the first reference's
  sensor frame;
* the clicks are kept in the fixed frame, as the reference's snapped points, and move with
  their object: on a sweep ``S`` carried from the reference ``R`` a click of object ``k`` lies
  at ``M_k @ inv(pose_R) @ q`` (``M_k``: carry's ``object_motion``, R -> S sensor frames;
  background clicks and objects without a motion move with the ego motion).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from npiseg_ros.annotation.odometry import LidarOdometry
from npiseg_ros.core.carry import carry_labels, finite_rows, transform_points

__all__ = ["EGO_FALLBACKS", "Answer", "Reference", "Follower", "move_click", "snap_to_object",
           "UNCERTAINTY_CELL_M"]

EGO_FALLBACKS = ("align", "static")
"""What gives the ego motion between two sweeps when tf does not: ``align`` (ICP of the
static part of the two sweeps) or ``static`` (the sensor does not move)."""

UNCERTAINTY_CELL_M = 0.5
"""A carried point takes the largest uncertainty of the reference's points in its cell of this
size (after the ego motion): the uncertainty is smooth at this scale and a grid lookup costs a
few milliseconds where a nearest-neighbour search over a whole sweep costs ~60 ms."""

_KEY_OFFSET = 1 << 20
"""Grid cell indices are shifted by this and packed in 21 bits per axis (+-524 km at 0.5 m)."""


@dataclass(frozen=True)
class Reference:
    """The last segmented (decoded) sweep, which every carried sweep is labelled from.

    Attributes:
        xyz: (N, 3) float32 points, metres, its sensor frame (NaN rows allowed).
        labels: (N,) int64 decoded object ids (0 = background, -1 = dropped point).
        uncertainty: (N,) float32 decoded uncertainty (NaN for dropped points).
        pose: (4, 4) float64 fixed frame <- sensor frame at its stamp.
        stamp: seconds.
        clicks: (position (3,) float64 in the fixed frame, object id) per click, in order.
        suggestion: suggested next click, (3,) float64 fixed frame, or None.
        token: identifies the reference (answers carried from it keep it).
    """

    xyz: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray
    pose: np.ndarray
    stamp: float
    clicks: tuple[tuple[np.ndarray, int], ...] = ()
    suggestion: np.ndarray | None = None
    token: int = 0
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_uncertainty(self) -> float:
        """Largest finite decoded uncertainty (0 without any): what unsupported points get
        (computed once per reference, not once per carried sweep)."""
        if "max_uncertainty" not in self._cache:
            finite = self.uncertainty[np.isfinite(self.uncertainty)]
            self._cache["max_uncertainty"] = float(finite.max()) if finite.size else 0.0
        return self._cache["max_uncertainty"]


@dataclass(frozen=True)
class Answer:
    """Labels for one sweep: carried from a reference, or the reference's own decode.

    Attributes:
        xyz: (N, 3) float32 the sweep's points, its sensor frame.
        labels: (N,) int64 object ids (0 = background), -1 = no support (unknown).
        uncertainty: (N,) float32; carried points take the reference's uncertainty around
            them, unsupported points :attr:`Reference.max_uncertainty`.
        pose: (4, 4) float64 fixed frame <- this sweep's sensor frame.
        ego: (4, 4) float64 reference -> this sweep (sensor frames).
        motions: object id -> (4, 4) float64 reference -> this sweep of that object's points
            (ego motion composed with the object's own motion).
        reference: :attr:`Reference.token` of the reference it was carried from.
        carried: False for the reference's own decode.
        ego_source: ``tf``, ``align`` or ``static``; ``decode`` for the reference's own.
        clicks: (position (3,) float64 in this sweep's frame, object id) of every click.
        suggestion: suggested next click in this sweep's frame, or None.
        carry_ms: time spent carrying, milliseconds (0 for a decode).
    """

    xyz: np.ndarray
    labels: np.ndarray
    uncertainty: np.ndarray
    pose: np.ndarray
    ego: np.ndarray
    motions: dict[int, np.ndarray]
    reference: int
    carried: bool
    ego_source: str
    clicks: tuple[tuple[np.ndarray, int], ...] = ()
    suggestion: np.ndarray | None = None
    carry_ms: float = 0.0

    def motion_of(self, object_id: int) -> np.ndarray:
        """Reference -> this sweep for ``object_id``'s points (the ego motion when it has no
        motion of its own: background, a new object)."""
        return self.motions.get(int(object_id), self.ego)


class Follower:
    """Holds the reference and carries it onto new sweeps (any thread).

    Args:
        ego_fallback: ``align`` or ``static`` (:data:`EGO_FALLBACKS`), used for a sweep without
            a tf pose.
    """

    def __init__(self, ego_fallback: str = "align") -> None:
        self._lock = threading.Lock()
        self._reference: Reference | None = None
        self._tokens = 0
        self._odometry = LidarOdometry()   # the sweep poses (lock order: ours, then its)
        self.ego_fallback = ego_fallback

    @property
    def ego_fallback(self) -> str:
        return self._ego_fallback

    @ego_fallback.setter
    def ego_fallback(self, value: str) -> None:
        if value not in EGO_FALLBACKS:
            raise ValueError(f"ego_fallback must be one of {', '.join(EGO_FALLBACKS)}, "
                             f"got {value!r}")
        self._ego_fallback = value

    @property
    def reference(self) -> Reference | None:
        return self._reference

    def clear(self) -> None:
        """Forget the reference and the motion history (a new stream)."""
        with self._lock:
            self._reference = None
            self._odometry.clear()

    def set_reference(self, xyz: np.ndarray, labels: np.ndarray, uncertainty: np.ndarray, *,
                      pose: np.ndarray, stamp: float,
                      clicks: list[tuple[np.ndarray, int]] | tuple = (),
                      suggestion=None) -> Answer:
        """Make a decoded sweep the reference; returns its own :class:`Answer`.

        Args:
            xyz, labels, uncertainty: the sweep and its decode (see :class:`Reference`).
            pose: (4, 4) fixed <- sensor at ``stamp`` (the sweep's :attr:`Answer.pose`).
            stamp: seconds.
            clicks: (position (3,) in the sweep's frame, object id): the snapped points.
            suggestion: (3,) suggested next click in the sweep's frame, or None.
        """
        pose = np.asarray(pose, np.float64)
        fixed_clicks = tuple((transform_points(pose, np.asarray(p, np.float64)[None])[0],
                              int(object_id)) for p, object_id in clicks)
        fixed_suggestion = (None if suggestion is None else
                            transform_points(pose, np.asarray(suggestion, np.float64)[None])[0])
        with self._lock:
            self._tokens += 1
            reference = Reference(np.asarray(xyz), np.asarray(labels, np.int64),
                                  np.asarray(uncertainty, np.float32), pose, float(stamp),
                                  fixed_clicks, fixed_suggestion, self._tokens)
            self._reference = reference
            self._odometry.start(float(stamp), pose, reference.xyz, reference.labels)
        identity = np.eye(4)
        return Answer(reference.xyz, reference.labels, reference.uncertainty, pose, identity,
                      {}, reference.token, False, "decode", self._clicks_on(reference, pose,
                                                                            identity, {}),
                      None if suggestion is None else np.asarray(suggestion, np.float64))

    # ------------------------------------------------------------------ carrying
    def carry(self, xyz: np.ndarray, stamp: float,
              pose: np.ndarray | None = None) -> Answer | None:
        """Labels for the sweep ``xyz`` (N, 3) at ``stamp`` (seconds), carried from the
        reference; ``pose`` (4, 4) fixed <- sensor from tf, or None (:attr:`ego_fallback`).
        None when there is no reference yet."""
        reference = self._reference
        if reference is None:
            return None
        start = time.perf_counter()
        xyz = np.asarray(xyz)
        if pose is not None:
            pose, source = np.asarray(pose, np.float64), "tf"
        elif self._ego_fallback == "static":
            pose, source = reference.pose, "static"
        else:
            pose, source = self._odometry.pose(xyz, stamp), "align"
        # no pose (no motion known yet): carry_labels aligns the two sweeps from scratch
        carried = carry_labels(reference.xyz, reference.labels, xyz,
                               None if pose is None else np.linalg.inv(pose) @ reference.pose)
        ego = carried.ego
        if pose is None:
            pose = reference.pose @ np.linalg.inv(ego)
        if source == "align":    # this sweep may be the next one's alignment target
            self._odometry.record(float(stamp), pose, xyz, carried.labels)
        else:
            self._odometry.record(float(stamp), pose)
        uncertainty = self._carried_uncertainty(reference, xyz, carried.labels, ego,
                                                carried.object_motion)
        suggestion = None if reference.suggestion is None else transform_points(
            np.linalg.inv(pose), reference.suggestion[None])[0]
        return Answer(xyz, carried.labels, uncertainty, pose, ego, dict(carried.object_motion),
                      reference.token, True, source,
                      self._clicks_on(reference, pose, ego, carried.object_motion), suggestion,
                      (time.perf_counter() - start) * 1e3)

    def _clicks_on(self, reference: Reference, pose: np.ndarray, ego: np.ndarray,
                   motions: dict[int, np.ndarray]) -> tuple[tuple[np.ndarray, int], ...]:
        """The reference's clicks in a sweep's frame, each moved with its object."""
        to_reference = np.linalg.inv(reference.pose)
        return tuple((transform_points(motions.get(object_id, ego) @ to_reference,
                                       position[None])[0], object_id)
                     for position, object_id in reference.clicks)

    def _carried_uncertainty(self, reference: Reference, xyz: np.ndarray, labels: np.ndarray,
                             ego: np.ndarray, motions: dict[int, np.ndarray]) -> np.ndarray:
        """Each new point's uncertainty: the largest of the reference's points in its cell
        (objects' points are moved back with their own motion, the rest with the ego motion);
        unsupported points and cells the reference did not see get the maximum."""
        keys, values = reference._cache.get("grid", (None, None))
        if keys is None:
            keys, values = _uncertainty_grid(reference.xyz, reference.uncertainty)
            reference._cache["grid"] = (keys, values)
        back = _transform32(np.linalg.inv(ego), xyz)
        objects = np.flatnonzero(labels > 0)     # one pass over the sweep for all objects
        object_ids = labels[objects]
        for object_id, motion in motions.items():
            if np.array_equal(motion, ego):      # not tracked: moved back with the ego motion
                continue
            members = objects[object_ids == object_id]
            if members.size:
                back[members] = _transform32(np.linalg.inv(motion), xyz[members])
        maximum = np.float32(reference.max_uncertainty)
        result = np.full(labels.shape[0], maximum, np.float32)
        usable = np.flatnonzero((labels >= 0) & finite_rows(back))
        if keys.size and usable.size:
            with np.errstate(invalid="ignore"):   # keys of non-finite rows: unused
                wanted = _cell_keys(back)[usable]     # whole rows: cheaper than a gather
            slot = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
            found = keys[slot] == wanted
            result[usable[found]] = values[slot[found]]
        result[~finite_rows(xyz)] = np.nan
        return result


def move_click(position, source: Answer, target: Answer) -> np.ndarray:
    """A position on sweep ``source`` (its frame) moved onto sweep ``target`` (its frame).

    Both carried from the same reference: the position moves with the object under it (the
    label of ``source``'s nearest point), undoing ``source``'s motion and applying
    ``target``'s. From different references: through the fixed frame (poses), as if static.
    """
    position = np.asarray(position, np.float64).reshape(3)
    if source.reference != target.reference:
        return transform_points(np.linalg.inv(target.pose) @ source.pose, position[None])[0]
    finite = finite_rows(source.xyz)
    object_id = 0
    if finite.any():
        offsets = np.asarray(source.xyz, np.float64)[finite] - position
        nearest = int(np.argmin(np.einsum("ij,ij->i", offsets, offsets)))
        object_id = int(source.labels[np.flatnonzero(finite)[nearest]])
    motion = target.motion_of(object_id) @ np.linalg.inv(source.motion_of(object_id))
    return transform_points(motion, position[None])[0]


def snap_to_object(xyz: np.ndarray, labels: np.ndarray, position, object_id: int,
                   max_distance: float) -> int | None:
    """Index of the point of ``object_id`` (by ``labels``) nearest ``position`` within
    ``max_distance`` metres, None when there is none: a carried click is re-snapped onto its
    own object rather than onto the ground beside it."""
    members = np.flatnonzero((np.asarray(labels) == object_id) & finite_rows(xyz))
    if members.size == 0:
        return None
    offsets = np.asarray(xyz, np.float64)[members] - np.asarray(position, np.float64)
    squared = np.einsum("ij,ij->i", offsets, offsets)
    best = int(np.argmin(squared))
    return int(members[best]) if squared[best] <= max_distance ** 2 else None


def _transform32(transform: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(N, 3) float32 points mapped by a (4, 4) transform (float32 is millimetre-exact at
    LiDAR ranges and halves the memory traffic of a whole sweep)."""
    transform = np.asarray(transform, np.float32)
    return np.asarray(xyz, np.float32) @ transform[:3, :3].T + transform[:3, 3]


def _cell_keys(xyz: np.ndarray) -> np.ndarray:
    """(N,) int64 key of each point's grid cell (cells far out share the border cells); in
    place where it can, a whole sweep's keys cost ~1 ms."""
    cells = np.multiply(xyz, np.float32(1.0 / UNCERTAINTY_CELL_M), dtype=np.float32)
    np.floor(cells, out=cells)
    np.clip(cells, -_KEY_OFFSET, _KEY_OFFSET - 1, out=cells)
    cells += _KEY_OFFSET
    cells = cells.astype(np.int64)
    keys = cells[:, 0] << 42
    keys |= cells[:, 1] << 21
    keys |= cells[:, 2]
    return keys


def _uncertainty_grid(xyz: np.ndarray, uncertainty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted cell keys and the largest uncertainty of the points in each cell."""
    usable = finite_rows(xyz) & np.isfinite(uncertainty)
    if not usable.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    keys = _cell_keys(np.asarray(xyz)[usable])
    values = np.asarray(uncertainty, np.float32)[usable]
    order = np.lexsort((values, keys))    # by key, then value: each key's last is its largest
    keys, values = keys[order], values[order]
    last = np.r_[keys[1:] != keys[:-1], True]
    return keys[last], values[last]

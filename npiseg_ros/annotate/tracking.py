"""Tracking across frames: carry each object's mask into the next sweep, prompt the model on it.

The previous frame's labels are moved into the new sweep by the ego motion (``/tf`` poses when
the source has them, else ``core.carry``'s own alignment of the two sweeps) and by each
object's own motion (``carry_labels``: every object aligned on its own about z, so a car that
drives keeps its label). The carried mask then prompts the model in the new frame:

- as its previous-mask input (:class:`~npiseg_ros.annotate.session.AnnotateSession.set_prior`:
  the decoder's encoding of "what was labelled before", paper B.2), and
- with one positive click per object at the carried mask's deepest point (the point farthest
  from every point outside the mask: the least ambiguous one to click), plus the previous
  frame's background clicks moved by the ego motion (those that land on a carried object are
  dropped).

Object ids are kept from frame to frame: an object id is a track id. The carried labels are
stored per frame (``carried/<frame>.npz``) so that a resumed frame replays its clicks on the
same previous-mask input and gets the same labels.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from npiseg_ros.core.carry import carry_labels, transform_points
from npiseg_ros.io.atomic import atomic_write_bytes

__all__ = ["CarriedObjects", "carry_objects", "deepest_points", "PriorRecord", "write_prior",
           "read_prior", "remove_prior", "MIN_CARRIED_POINTS"]

MIN_CARRIED_POINTS = 3
"""An object with fewer carried points is lost (left the view, or hidden): no click for it."""


@dataclass
class CarriedObjects:
    """What :func:`carry_objects` made of the previous frame.

    Attributes:
        labels: (N,) int64 carried object id per new point (0 background, -1 unsupported).
        prompts: (point index, object id) per carried object: a click at its deepest point.
        background: (3,) float64 positions, metres, new frame: the previous background clicks
            moved by the ego motion.
        ego: (4, 4) float64 previous -> new frame transform used.
        through_poses: ``ego`` came from the poses (else from aligning the sweeps).
        lost: ids of the previous objects with too few carried points.
        points: object id -> carried points.
    """

    labels: np.ndarray
    prompts: list[tuple[int, int]]
    background: list[np.ndarray]
    ego: np.ndarray
    through_poses: bool
    lost: list[int] = field(default_factory=list)
    points: dict[int, int] = field(default_factory=dict)


def deepest_points(xyz: np.ndarray, labels: np.ndarray, object_ids, *,
                   margin_m: float = 1.0) -> dict[int, int]:
    """Object id -> index of its point farthest from every point outside it.

    Args:
        xyz: (N, 3) float coordinates, metres (non-finite rows are ignored).
        labels: (N,) int object id per point.
        object_ids: the ids to look for (absent ids are left out of the result).
        margin_m: only the points within this distance of the object's bounding box compete
            as "outside" (the rest of the sweep cannot be nearer).
    """
    xyz = np.asarray(xyz, np.float64)
    finite = np.isfinite(xyz).all(axis=1)
    labels = np.asarray(labels)
    found = {}
    for object_id in object_ids:
        members = np.flatnonzero((labels == object_id) & finite)
        if members.size == 0:
            continue
        low = xyz[members].min(axis=0) - margin_m
        high = xyz[members].max(axis=0) + margin_m
        with np.errstate(invalid="ignore"):
            near = finite & (xyz >= low).all(axis=1) & (xyz <= high).all(axis=1)
        outside = np.flatnonzero(near & (labels != object_id))
        if outside.size == 0:  # nothing around it: the point nearest its centre
            centre = xyz[members].mean(axis=0)
            found[int(object_id)] = int(members[np.argmin(
                np.linalg.norm(xyz[members] - centre, axis=1))])
            continue
        depth, _ = cKDTree(xyz[outside]).query(xyz[members])
        found[int(object_id)] = int(members[np.argmax(depth)])
    return found


def carry_objects(previous_xyz: np.ndarray, previous_labels: np.ndarray,
                  background_clicks: list[np.ndarray], xyz: np.ndarray,
                  ego: np.ndarray | None = None) -> CarriedObjects:
    """Carry the previous frame's objects into the sweep ``xyz``.

    Args:
        previous_xyz: (P, 3) float previous sweep, its frame, metres (NaN rows: left out).
        previous_labels: (P,) int object ids of the previous sweep (-1: not labelled).
        background_clicks: (3,) positions of the previous frame's background clicks, metres,
            previous frame.
        xyz: (N, 3) float new sweep, its frame, metres (NaN rows get -1).
        ego: (4, 4) previous -> new frame transform from the poses, or None (estimated from
            the two sweeps by ``carry_labels``).
    """
    through_poses = ego is not None
    carried = carry_labels(previous_xyz, previous_labels, xyz, ego)
    labels = carried.labels
    previous_ids = np.unique(np.asarray(previous_labels)[np.asarray(previous_labels) > 0])
    counts = np.bincount(np.maximum(labels, 0), minlength=int(previous_ids.max(initial=0)) + 1)
    kept = [int(i) for i in previous_ids if counts[i] >= MIN_CARRIED_POINTS]
    lost = [int(i) for i in previous_ids if counts[i] < MIN_CARRIED_POINTS]
    labels = np.where(np.isin(labels, lost), 0, labels)
    deepest = deepest_points(xyz, labels, kept)
    moved = [transform_points(carried.ego, np.asarray(p, np.float64)[None])[0]
             for p in background_clicks]
    return CarriedObjects(labels, [(deepest[i], i) for i in kept if i in deepest], moved,
                          carried.ego, through_poses, lost, {i: int(counts[i]) for i in kept})


@dataclass(frozen=True)
class PriorRecord:
    """The carried (or imported) labels a frame's first decode builds on.

    Attributes:
        fingerprint: the frame cloud's fingerprint (a record of another cloud is ignored).
        labels: (N,) int32 object id per point (-1 unknown).
        origin: where it came from: ``carried from <frame>`` or ``imported from <file>``.
        clicks: how many of the frame's first clicks were made by the tool (carried or
            imported prompts), not by a person.
    """

    fingerprint: str
    labels: np.ndarray
    origin: str
    clicks: int


def _prior_path(folder: Path, frame: str) -> Path:
    return Path(folder) / "carried" / f"{frame}.npz"


def write_prior(folder: Path, frame: str, record: PriorRecord, mode: int = 0o644) -> Path:
    """Store ``record`` atomically as ``carried/<frame>.npz`` in the session folder."""
    buffer = io.BytesIO()  # uncompressed: written on the way into a frame, every ms counts
    np.savez(buffer, fingerprint=np.array(record.fingerprint),
                        labels=np.asarray(record.labels, np.int32),
                        origin=np.array(record.origin), clicks=np.array(record.clicks))
    path = _prior_path(folder, frame)
    atomic_write_bytes(path, buffer.getvalue(), mode=mode)
    return path


def read_prior(folder: Path, frame: str, fingerprint: str | None = None) -> PriorRecord | None:
    """The frame's stored prior (None when there is none, it is unreadable, or it belongs to
    another cloud than ``fingerprint``)."""
    path = _prior_path(folder, frame)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            record = PriorRecord(str(data["fingerprint"]), data["labels"].astype(np.int64),
                                 str(data["origin"]), int(data["clicks"]))
    except (OSError, ValueError, KeyError):
        return None
    if fingerprint is not None and record.fingerprint != fingerprint:
        return None
    return record


def remove_prior(folder: Path, frame: str) -> None:
    try:
        os.unlink(_prior_path(folder, frame))
    except FileNotFoundError:
        pass

"""Prompts without a user: automatic clicks on object proposals, and what the model's answer says.

Triage of many drives cannot wait for a person's first click, so every frame is prompted the
way a labeller would start: the ground is removed (``eval.targets.ground_mask``), the rest is
split into Euclidean pieces (``eval.targets.connected_pieces``), every piece of object size
gets one click of its own object id (the point nearest its centroid), and a few clicks on the
ground and on the largest stuff pieces (walls, vegetation) say "background". The model then
segments all of them in one decode, and the frame is judged by what the model knows best:

* ``mean_uncertainty`` / ``max_uncertainty``: the model's own Monte-Carlo uncertainty, averaged
  over each proposed object's points (``Prediction.object_stats``), then over the objects;
* ``split``: the share of a proposal's points that the model does not give the proposal's own
  object (part of it labelled background or another object): geometry and model disagree
  about where the object is;
* ``merge``: the share of an object's mask that lies outside its own proposal (on another
  proposal, the ground or stuff): the model joined things that are apart or leaked;
* ``novelty`` (``novelty_of``): how far a cheap occupancy descriptor of the frame is from the
  most similar of the previous frames of the same source: new scenery.

``combine_scores`` turns the terms into one score per frame (docs/triage.md says why each term
is there and how they combine). Pure numpy + scipy apart from :func:`prompt_frame`, which takes
a :class:`~npiseg_ros.core.session.SegmentationSession` holding the frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npiseg_ros.core.errors import ClickRejectedError
from npiseg_ros.core.types import BACKGROUND_ID, Prediction
from npiseg_ros.eval.targets import MIN_PIECE_POINTS, connected_pieces, ground_mask

__all__ = ["Proposals", "FrameTerms", "propose", "prompt_frame", "proposal_terms",
           "occupancy_descriptor", "novelty_of", "combine_scores", "MAX_PROPOSALS",
           "MAX_THING_EXTENT_M", "STUFF_CLICKS", "DESCRIPTOR_SIZE", "NOVELTY_WINDOW"]

MAX_PROPOSALS = 16
"""Object proposals clicked per frame (the largest by point count): the decoder's cost grows with
the clicks (~35 ms after 20 on the bundled sweep), and a person triaging looks at the big
objects near the sensor first."""

MAX_THING_EXTENT_M = 10.0
"""A piece whose horizontal bounding box is longer than this (metres) is stuff (a wall, a hedge,
a row of parked cars seen as one piece), not one object: a bus is ~12 m but rarely one piece
longer than 10 m in a sweep."""

STUFF_CLICKS = 3
"""Background clicks per frame: one on the ground, the rest on the largest stuff pieces."""

UNASSIGNED = -1
"""``Proposals.thing_of_point`` value of points in no object proposal (ground, stuff, small
pieces, dropped points)."""

RANGE_EDGES_M = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0)
AZIMUTH_SECTORS = 8
HEIGHT_EDGES_M = (0.3, 2.0)
"""The occupancy descriptor: point shares over 8 range rings (the last open-ended) x 8 azimuth
sectors x 3 height bands above the frame's low ground (5th percentile of z)."""
DESCRIPTOR_SIZE = len(RANGE_EDGES_M) * AZIMUTH_SECTORS * (len(HEIGHT_EDGES_M) + 1)

NOVELTY_WINDOW = 100
"""Previous frames a frame is compared with (novelty): enough to find a revisited place in a
short loop, bounded so that novelty stays linear in the number of frames."""


@dataclass(frozen=True)
class Proposals:
    """Automatic prompts of one frame.

    Attributes:
        thing_of_point: (N,) int32 proposal index (0..P-1) per point, ``UNASSIGNED`` elsewhere.
        clicks: (P,) int64 point index of each proposal's click (the point nearest its centroid).
        background_clicks: (S,) int64 point indices of the background clicks (ground, stuff).
        ground: (N,) bool, points on the local ground (False for dropped points).
    """

    thing_of_point: np.ndarray
    clicks: np.ndarray
    background_clicks: np.ndarray
    ground: np.ndarray

    @property
    def count(self) -> int:
        return int(self.clicks.size)


@dataclass(frozen=True)
class FrameTerms:
    """What the model's answer to the automatic prompts says about a frame (each in [0, 1] but
    the uncertainties, which are in the model's units: Eq. 13-14, higher = less sure)."""

    objects: int
    mean_uncertainty: float
    max_uncertainty: float
    split: float
    merge: float


def _nearest_to_centroid(xyz: np.ndarray, members: np.ndarray) -> int:
    """Index (into ``xyz``) of the member point nearest the members' centroid: a click inside the
    piece even when it is hollow or curved (the centroid itself can lie in the air)."""
    points = xyz[members]
    return int(members[np.argmin(np.square(points - points.mean(axis=0)).sum(axis=1))])


def propose(xyz: np.ndarray, *, max_proposals: int = MAX_PROPOSALS,
            stuff_clicks: int = STUFF_CLICKS, min_points: int = MIN_PIECE_POINTS,
            max_extent_m: float = MAX_THING_EXTENT_M) -> Proposals:
    """Object proposals and background clicks of a frame.

    Args:
        xyz: (N, 3) float, metres, sensor frame; rows with NaN/inf (dropped or out of range)
            take part in nothing.
        max_proposals: at most this many object proposals (the largest pieces).
        stuff_clicks: background clicks (the first on the ground when there is ground).
        min_points: smaller pieces are not proposed (not something a person would click).
        max_extent_m: pieces with a longer horizontal bounding box are stuff.

    Raises:
        ValueError: ``xyz`` is not (N, 3).
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must be (N, 3), got {xyz.shape}")
    if max_proposals < 0 or stuff_clicks < 0 or min_points < 1:
        raise ValueError("max_proposals and stuff_clicks must be >= 0, min_points >= 1")
    count = xyz.shape[0]
    valid = np.flatnonzero(np.isfinite(xyz).all(axis=1))
    thing_of_point = np.full(count, UNASSIGNED, np.int32)
    ground = np.zeros(count, bool)
    empty = np.zeros(0, np.int64)
    if valid.size == 0:
        return Proposals(thing_of_point, empty, empty, ground)
    points = xyz[valid].astype(np.float64)
    ground[valid] = ground_mask(points)
    above = valid[~ground[valid]]
    things: list[tuple[int, np.ndarray]] = []     # (size, member indices)
    stuff: list[tuple[int, np.ndarray]] = []
    if above.size:
        pieces = connected_pieces(xyz[above].astype(np.float64))
        order = np.argsort(pieces, kind="stable")
        bounds = np.flatnonzero(np.diff(pieces[order])) + 1
        for members in np.split(above[order], bounds):
            if members.size < min_points:
                continue
            extent = np.ptp(xyz[members, :2], axis=0).max()
            (things if extent <= max_extent_m else stuff).append((members.size, members))
    # largest first; ties broken by the first point index so that the order is reproducible
    things.sort(key=lambda item: (-item[0], int(item[1][0])))
    stuff.sort(key=lambda item: (-item[0], int(item[1][0])))
    clicks = []
    for number, (_, members) in enumerate(things[:max_proposals]):
        thing_of_point[members] = number
        clicks.append(_nearest_to_centroid(xyz, members))
    background = []
    ground_points = np.flatnonzero(ground)
    if stuff_clicks and ground_points.size >= min_points:
        background.append(_nearest_to_centroid(xyz, ground_points))
    for _, members in stuff[:stuff_clicks - len(background)]:
        background.append(_nearest_to_centroid(xyz, members))
    return Proposals(thing_of_point, np.array(clicks, np.int64), np.array(background, np.int64),
                     ground)


def prompt_frame(session, proposals: Proposals) -> tuple[Prediction, np.ndarray]:
    """Click every proposal (a new object each) and the background points, then predict.

    Args:
        session: a ``SegmentationSession`` holding the frame (``set_cloud`` done); its clicks
            are replaced.
        proposals: from :func:`propose` on the same cloud.

    Returns:
        The prediction and (P,) int64 object id given to each proposal (0 = its click was
        rejected, e.g. the point was dropped by the voxeliser).
    """
    session.reset()
    object_ids = np.zeros(proposals.count, np.int64)
    for number, point in enumerate(proposals.clicks):
        object_id = session.new_object()
        try:
            session.add_click(point_index=int(point), object_id=object_id)
        except ClickRejectedError:
            continue
        object_ids[number] = object_id
    for point in proposals.background_clicks:
        try:
            session.add_click(point_index=int(point), object_id=BACKGROUND_ID)
        except ClickRejectedError:
            continue
    return session.predict(), object_ids


def proposal_terms(proposals: Proposals, prediction: Prediction,
                   object_ids: np.ndarray) -> FrameTerms:
    """Per-frame terms from the model's answer to the automatic prompts.

    Args:
        proposals: the frame's proposals.
        prediction: the session's prediction after :func:`prompt_frame` (labels (N,) int32).
        object_ids: (P,) int64 object id of each proposal, 0 where its click was rejected.

    Returns:
        ``split`` and ``merge`` are means over the clicked proposals; all terms are 0 for a
        frame without any.
    """
    labels = np.asarray(prediction.labels)
    if labels.shape != proposals.thing_of_point.shape:
        raise ValueError(f"prediction has {labels.shape[0]} points, proposals "
                         f"{proposals.thing_of_point.shape[0]}")
    clicked = np.flatnonzero(object_ids > 0)
    if clicked.size == 0:
        return FrameTerms(0, 0.0, 0.0, 0.0, 0.0)
    uncertainties, splits, merges = [], [], []
    for number in clicked:
        object_id = int(object_ids[number])
        stats = prediction.object_stats.get(object_id)
        uncertainties.append(stats.mean_uncertainty if stats and stats.num_points else 0.0)
        own = proposals.thing_of_point == number
        own_labels = labels[own & (labels >= 0)]
        kept = np.count_nonzero(own_labels == object_id)
        splits.append(1.0 - kept / own_labels.size if own_labels.size else 0.0)
        mask = np.count_nonzero(labels == object_id)
        merges.append(1.0 - kept / mask if mask else 0.0)
    return FrameTerms(objects=int(clicked.size),
                      mean_uncertainty=float(np.mean(uncertainties)),
                      max_uncertainty=float(np.max(uncertainties)),
                      split=float(np.mean(splits)), merge=float(np.mean(merges)))


def occupancy_descriptor(xyz: np.ndarray) -> np.ndarray:
    """(DESCRIPTOR_SIZE,) float32 shares of the frame's finite points per (range ring, azimuth
    sector, height band) cell, summing to 1 (all zeros for a frame without finite points).

    Args:
        xyz: (N, 3) float, metres, sensor frame (range and azimuth are around its origin).
    """
    xyz = np.asarray(xyz, np.float64)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if xyz.shape[0] == 0:
        return np.zeros(DESCRIPTOR_SIZE, np.float32)
    ring = np.searchsorted(RANGE_EDGES_M, np.hypot(xyz[:, 0], xyz[:, 1]), side="right") - 1
    azimuth = np.arctan2(xyz[:, 1], xyz[:, 0])
    sector = np.minimum((azimuth + np.pi) / (2 * np.pi) * AZIMUTH_SECTORS,
                        AZIMUTH_SECTORS - 1).astype(np.int64)
    # heights above the low ground: sensors sit at different heights on different vehicles
    band = np.searchsorted(HEIGHT_EDGES_M, xyz[:, 2] - np.percentile(xyz[:, 2], 5), side="right")
    cell = (ring * AZIMUTH_SECTORS + sector) * (len(HEIGHT_EDGES_M) + 1) + band
    counts = np.bincount(cell, minlength=DESCRIPTOR_SIZE).astype(np.float64)
    return (counts / counts.sum()).astype(np.float32)


def novelty_of(descriptors: np.ndarray, *, window: int = NOVELTY_WINDOW) -> np.ndarray:
    """(F,) float64 novelty of each frame of one source, in source order: the total-variation
    distance (half the L1 distance, in [0, 1]: the share of the points that sit in other cells)
    between its descriptor and the most similar of the ``window`` frames before it; 1 for the
    first frame.

    Args:
        descriptors: (F, D) descriptors of :func:`occupancy_descriptor`, source order.
    """
    descriptors = np.asarray(descriptors, np.float64)
    if descriptors.ndim != 2:
        raise ValueError(f"descriptors must be (F, D), got {descriptors.shape}")
    novelty = np.ones(descriptors.shape[0])
    for index in range(1, descriptors.shape[0]):
        earlier = descriptors[max(0, index - window):index]
        distance = 0.5 * np.abs(earlier - descriptors[index]).sum(axis=1)
        novelty[index] = min(1.0, float(distance.min()))
    return novelty


def combine_scores(mean_uncertainty: np.ndarray, split: np.ndarray, merge: np.ndarray,
                   novelty: np.ndarray) -> np.ndarray:
    """(F,) float64 attention score of each frame (higher = look first), in [0, 4].

    The uncertainty is divided by its largest value over the frames given (the model's units
    mean nothing to a person; the share of the worst frame does), so that each of the four terms
    lies in [0, 1] and weighs the same. NaN entries (unusable frames) give NaN.
    """
    mean_uncertainty = np.asarray(mean_uncertainty, np.float64)
    scale = np.nanmax(mean_uncertainty, initial=0.0) if mean_uncertainty.size else 0.0
    scaled = mean_uncertainty / scale if scale > 0 else np.zeros_like(mean_uncertainty)
    scaled = np.where(np.isnan(mean_uncertainty), np.nan, scaled)
    return scaled + np.asarray(split, np.float64) + np.asarray(merge, np.float64) + np.asarray(
        novelty, np.float64)

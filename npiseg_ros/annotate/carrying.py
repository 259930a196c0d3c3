"""Carrying the frame the user leaves into the next frame opened (``--carry``).

- ``masks`` (needs an :class:`~npiseg_ros.annotate.session.AnnotateSession`): each object's
  mask is tracked into the new sweep and prompts the model there (``tracking.py``: the carried
  labels become the previous-mask input, one click per object at its deepest point, the
  background clicks moved by the ego motion);
- ``clicks``: every click is made again where it was, moved by the ``/tf`` poses when the
  source has them;
- ``off``: nothing is carried.

What was carried, and what landed on no point, is a :class:`CarryReport` (shown in the page).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npiseg_ros.annotate.sources import Frame
from npiseg_ros.annotate.tracking import CarriedObjects, carry_objects
from npiseg_ros.annotation import AnnotationController
from npiseg_ros.core.errors import ClickRejectedError
from npiseg_ros.core.types import BACKGROUND_ID

__all__ = ["CARRY_MODES", "carry_mode", "CarryReport", "carry_clicks", "LeftFrame",
           "left_frame", "ego_motion", "track", "carry_in"]

CARRY_MODES = ("masks", "clicks", "off")


def carry_mode(carry: bool | str | None, tracks: bool) -> str:
    """The mode for ``--carry`` (True: ``masks`` when the session ``tracks``, else
    ``clicks``; False / None: ``off``).

    Raises:
        ValueError: an unknown mode, or ``masks`` for a session that does not track.
    """
    if carry is True:
        carry = "masks" if tracks else "clicks"
    elif carry is False or carry is None:
        carry = "off"
    if carry not in CARRY_MODES or (carry == "masks" and not tracks):
        raise ValueError(f"carry must be one of {CARRY_MODES} ('masks' needs an "
                         f"AnnotateSession), got {carry!r}")
    return carry


@dataclass
class CarryReport:
    """What carrying the previous frame into this one did.

    Attributes:
        from_frame: the frame carried from.
        mode: ``masks`` (objects tracked, see tracking.py) or ``clicks`` (clicks re-applied).
        carried: clicks made in this frame from the carry.
        through_poses: the motion came from /tf poses (masks: else from aligning the sweeps).
        missed: clicks (``clicks``) or objects and background clicks (``masks``) that landed on
            no point: click number, object id, position (new frame, mm), reason.
        objects: ``masks``: object id -> carried points.
    """

    from_frame: str
    mode: str = "clicks"
    carried: int = 0
    through_poses: bool = False
    missed: list[dict] = field(default_factory=list)
    objects: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"from_frame": self.from_frame, "mode": self.mode, "carried": self.carried,
                "through_poses": self.through_poses, "missed": self.missed,
                "objects": {str(k): v for k, v in self.objects.items()}}

    def message(self) -> str:
        """One line for the page (and, with misses, the log)."""
        poses = self.through_poses
        if self.mode == "masks":
            message = (f"tracked {len(self.objects)} objects from frame {self.from_frame}"
                       f" ({self.carried} clicks{', motion through /tf poses' if poses else ''})")
        else:
            message = (f"carried {self.carried} clicks from frame {self.from_frame}"
                       f"{' through /tf poses' if poses else ''}")
        if self.missed:
            message += (f"; {len(self.missed)} landed on no point (clicks "
                        f"{', '.join(str(m['click']) for m in self.missed)}): check them")
        return message


def carry_clicks(annotation: AnnotationController, clicks: list[tuple[np.ndarray, int]],
                 transform: np.ndarray | None) -> list[dict]:
    """Click again, on the annotation's cloud, where earlier clicks were; returns the misses.

    Args:
        annotation: the controller holding the new frame (its clicks are added to).
        clicks: (position, object id) pairs: (3,) float64 positions, metres, in the frame
            ``transform`` maps from (the new frame's own when ``transform`` is None).
        transform: (4, 4) float64 new frame <- old frame (through /tf poses), or None.

    Returns:
        One dict per click that landed on no point: click number (from 1), object id, the
        position in the new frame (rounded to mm) and the reason.
    """
    missed = []
    for number, (position, object_id) in enumerate(clicks, start=1):
        target = position if transform is None else transform[:3, :3] @ position + transform[:3, 3]
        try:
            annotation.click(target, object_id=object_id)
        except ClickRejectedError as error:
            missed.append({"click": number, "object_id": object_id,
                           "position": [round(float(v), 3) for v in target],
                           "reason": str(error)})
    return missed


@dataclass
class LeftFrame:
    """What carrying needs of the frame being left.

    Attributes:
        name: its name.
        pose: (4, 4) float64 fixed frame <- its sensor frame (/tf), or None.
        clicks: (position, object id) per click: (3,) float64 the clicked point, metres.
        active: its active object.
        segment: (P, 3) float its points as segmented (NaN rows: left out), metres.
        labels: (P,) int32 its labels, or None before a decode.
        carried: its objects tracked ahead into the next frame (background thread), or None.
    """

    name: str
    pose: np.ndarray | None
    clicks: list[tuple[np.ndarray, int]]
    active: int
    segment: np.ndarray
    labels: np.ndarray | None
    carried: CarriedObjects | None = None


def left_frame(annotation: AnnotationController, name: str, frame: Frame | None,
               segment: np.ndarray | None) -> LeftFrame | None:
    """The frame on screen (named ``name``, segmented as ``segment``) as :class:`LeftFrame`;
    None without a frame or clicks: nothing to carry."""
    clicks = annotation.clicks
    if frame is None or not clicks:
        return None
    xyz, prediction = frame.xyz, annotation.prediction  # the snapped points, not the positions
    return LeftFrame(name, frame.pose, [(xyz[c.point_index].astype(np.float64), c.object_id)
                                        for c in clicks], annotation.active_object, segment,
                     None if prediction is None else prediction.labels)


def ego_motion(previous_pose: np.ndarray | None, pose: np.ndarray | None) -> np.ndarray | None:
    """(4, 4) previous -> new frame transform through the /tf poses, or None."""
    if previous_pose is None or pose is None:
        return None
    return np.linalg.inv(pose) @ previous_pose


def track(previous: LeftFrame, segment: np.ndarray, pose: np.ndarray | None) -> CarriedObjects:
    """``previous``'s objects tracked into the sweep ``segment`` ((N, 3), metres; the new
    frame's ``pose`` or None). Numpy only: the background thread runs it ahead."""
    background = [p for p, object_id in previous.clicks if object_id == BACKGROUND_ID]
    return carry_objects(previous.segment, previous.labels, background, segment,
                         ego_motion(previous.pose, pose))


def carry_in(annotation: AnnotationController, previous: LeftFrame, mode: str,
             segment: np.ndarray, pose: np.ndarray | None
             ) -> tuple[CarryReport, np.ndarray | None]:
    """Carry ``previous`` into the annotation's new cloud (its clicks are added to).

    Args:
        annotation: the controller holding the new frame; ``masks`` needs its session to be an
            ``AnnotateSession`` (the carried labels become its prior).
        previous: the frame left.
        mode: ``masks`` or ``clicks`` (``masks`` without labels carries the clicks).
        segment: (N, 3) the new frame's points as segmented, metres.
        pose: the new frame's pose, or None.

    Returns:
        The report, and (``masks``) the (N,) carried labels the frame's decodes build on.
    """
    report = CarryReport(from_frame=previous.name, mode=mode)
    ego = ego_motion(previous.pose, pose)
    report.through_poses = ego is not None
    labels = None
    if mode == "masks" and previous.labels is not None:
        labels = _carry_masks(annotation, previous, segment, pose, report)
    else:
        report.mode = "clicks"
        report.missed = carry_clicks(annotation, previous.clicks, ego)
        report.carried = len(previous.clicks) - len(report.missed)
    annotation.select_object(previous.active)
    return report, labels


def _carry_masks(annotation: AnnotationController, previous: LeftFrame, segment: np.ndarray,
                 pose: np.ndarray | None, report: CarryReport) -> np.ndarray:
    """Move each object's mask into this frame; prompt the model on it (tracking.py)."""
    clicks = previous.clicks
    carried = previous.carried if previous.carried is not None else \
        track(previous, segment, pose)
    report.through_poses = carried.through_poses
    report.objects = dict(carried.points)
    annotation.session.set_prior(carried.labels)
    for point_index, object_id in carried.prompts:
        annotation.click(point_index=point_index, object_id=object_id)
    numbers = {}  # the previous frame's click numbers, to name what was not carried
    for number, (_, object_id) in enumerate(clicks, start=1):
        numbers.setdefault(object_id, number)
    for object_id in carried.lost:
        position = [position for position, owner in clicks if owner == object_id]
        moved = carried.ego[:3, :3] @ position[0] + carried.ego[:3, 3] if position else None
        report.missed.append({"click": numbers.get(object_id, 0), "object_id": object_id,
                              "position": [] if moved is None else
                              [round(float(v), 3) for v in moved],
                              "reason": "the object's mask found no points here (left "
                                        "the view or hidden)"})
    background_numbers = [n for n, (_, o) in enumerate(clicks, 1) if o == BACKGROUND_ID]
    for number, position in zip(background_numbers, carried.background):
        entry = {"click": number, "object_id": BACKGROUND_ID,
                 "position": [round(float(v), 3) for v in position]}
        try:
            click = annotation.click(position, object_id=BACKGROUND_ID)
        except ClickRejectedError as error:
            report.missed.append({**entry, "reason": str(error)})
            continue
        if carried.labels[click.point_index] > 0:  # it would contradict a tracked object
            annotation.undo()
            report.missed.append({**entry, "reason": "landed on a tracked object"})
    report.carried = len(annotation.clicks)
    return carried.labels

"""Follow mode on the encoding thread: where the clicks go when the annotated sweep changes.

In follow mode the ROS node's worker (``ros/worker.py``, the one PyTorch thread) encodes the
newest sweep each time it is free, and the carrying thread (:class:`~.stream.SweepStream`)
answers every other sweep from the last decode. :class:`FollowMode` is the worker's half:

* before a new sweep is encoded it is carried from the reference: that answer says where the
  clicks of the last decode are on it (:meth:`FollowMode.carry_onto`);
* after the encode each click is snapped onto a point carried with its object
  (:meth:`FollowMode.reapply`);
* a click made on another sweep (the one on screen) is moved onto the annotated one with the
  object under it (:meth:`FollowMode.onto_annotated`);
* every decode becomes the new reference (:meth:`FollowMode.decoded`), which the carrying
  thread then shows.

No ROS and no PyTorch: the controller's session runs the encodes, this module only numpy.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from npiseg_ros.annotation.controller import AnnotationController
from npiseg_ros.annotation.follow import Answer, move_click, snap_to_object
from npiseg_ros.annotation.stream import SweepStream, stamp_seconds
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.core.types import Prediction
from npiseg_ros.io.autosave import ClickRecord

__all__ = ["FollowMode"]


class FollowMode:
    """The annotated sweep's place in a followed stream (the worker thread calls it).

    Args:
        stream: the carrying thread; its ``follower`` holds the reference.
        pose_of: (cloud) -> (4, 4) float64 fixed frame <- the cloud's frame at its stamp, or
            None without one (tf missing).

    Attributes:
        annotated: the annotated sweep's :class:`~.follow.Answer` - carried from the reference
            before its first decode, its own decode after - or None (not following, or no
            reference when it was taken).
    """

    def __init__(self, stream: SweepStream,
                 pose_of: Callable[[Any], np.ndarray | None]) -> None:
        self.stream = stream
        self._pose_of = pose_of
        self.annotated: Answer | None = None

    def clear(self) -> None:
        """Forget the reference and the sweeps (follow mode left; the next follow starts from
        its next decode)."""
        self.stream.clear()
        self.annotated = None

    def carry_onto(self, cloud: Any) -> Answer | None:
        """``cloud`` (a new sweep to encode) carried from the current reference: the answer
        already reported for it, else carried now; None without a reference."""
        reference = self.stream.follower.reference
        return None if reference is None else self.stream.answer_for(cloud, reference.token)

    def reapply(self, controller: AnnotationController, xyz: np.ndarray,
                answer: Answer) -> list[str]:
        """Click the clicks of ``answer`` (the sweep ``xyz`` (N, 3), just set on
        ``controller``, carried from the last decode), each snapped onto a point carried with
        its object (the nearest point when none is within ``max_click_distance``). Returns
        the reasons of the clicks that were rejected."""
        limit = getattr(controller.session, "max_click_distance", 0.5)
        rejected = []
        for position, object_id in answer.clicks:
            index = snap_to_object(xyz, answer.labels, position, object_id, limit)
            try:
                if index is None:
                    controller.click(tuple(position), object_id=object_id)
                else:
                    controller.click(point_index=index, object_id=object_id)
            except (NPISegError, ValueError) as error:
                rejected.append(str(error))
        return rejected

    def onto_annotated(self, position: tuple[float, float, float],
                       sweep: Any) -> tuple[float, float, float]:
        """A click ``position`` (metres) made on ``sweep`` (another answered sweep), moved
        onto the annotated sweep with the object under it; unchanged when either sweep has
        no answer."""
        shown = self.stream.answer_of(sweep)
        if shown is None or self.annotated is None:
            return position
        return tuple(float(v) for v in move_click(position, shown, self.annotated))

    def decoded(self, cloud: Any, clicks: tuple[ClickRecord, ...],
                prediction: Prediction) -> None:
        """The annotated ``cloud`` was decoded with ``clicks`` (their ``point_index`` into
        it): the decode becomes what every later sweep is carried from."""
        annotated = self.annotated
        pose = annotated.pose if annotated is not None else self._pose_of(cloud)
        self.annotated = self.stream.follower.set_reference(
            cloud.xyz, prediction.labels, prediction.uncertainty,
            pose=np.eye(4) if pose is None else pose, stamp=stamp_seconds(cloud),
            clicks=[(cloud.xyz[click.point_index], click.object_id) for click in clicks],
            suggestion=prediction.suggested_click)
        self.stream.decoded(cloud, self.annotated)

"""Transforms from tf2: clicks into the cloud's frame at the cloud's stamp, sweep poses.

A click made in RViz is in RViz's fixed frame (``map``, ``odom``), on the cloud as RViz drew it:
transformed from the cloud's frame with the transform AT THE CLOUD'S STAMP. So the click is
brought back with that same transform - not the latest one, which on a moving robot is
already metres away (a click made 9 s after the cloud at 1 m/s would land 9 m off). The
lookup waits a bounded time (``transform_timeout``) for a transform that has not arrived yet.

The follow mode also asks for each sweep's pose in its fixed frame (:meth:`pose`), the ego
motion between two sweeps.

tf2 (``tf2_ros``) is imported lazily on the first lookup that needs it, so the node runs where
tf2 is not installed (the PyPI wheels have none); clicks in another frame are then rejected
with a reason saying that tf2 is missing, and poses are None (``ego_fallback``).
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time as RosTime

from npiseg_ros.core.errors import ClickRejectedError
from npiseg_ros.io.transforms import transform_matrix

__all__ = ["ClickTransformer", "transform_matrix", "stamp_text"]


def stamp_text(stamp: Time | None) -> str:
    """``12.345000000 s`` (or ``latest`` for a zero / missing stamp, which tf2 reads so)."""
    if stamp is None or (stamp.sec == 0 and stamp.nanosec == 0):
        return "latest"
    return f"{stamp.sec}.{stamp.nanosec:09d} s"


class ClickTransformer:
    """Looks transforms up in tf2, creating a tf2 listener on the node on first need."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._buffer = None
        self._listener = None
        self._tf2_missing: str | None = None

    def _ensure_tf2(self) -> bool:
        """Whether tf2 is usable (imports it and starts listening the first time)."""
        if self._buffer is None and self._tf2_missing is None:
            try:
                import tf2_ros
            except ImportError as error:
                self._tf2_missing = str(error)
                return False
            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, self._node,
                                                       spin_thread=False)
        return self._buffer is not None

    def _lookup(self, target: str, source: str, stamp: Time | None,
                timeout_s: float) -> np.ndarray:
        """target <- source at ``stamp`` (None: latest), waiting at most ``timeout_s``."""
        when = RosTime() if stamp is None else RosTime(seconds=stamp.sec,
                                                       nanoseconds=stamp.nanosec)
        found = self._buffer.lookup_transform(target, source, when,
                                              timeout=Duration(seconds=timeout_s))
        return transform_matrix(found.transform)

    def to_frame(self, point: PointStamped, target_frame: str | None, timeout_s: float,
                 stamp: Time | None = None) -> tuple[float, float, float]:
        """(x, y, z) of ``point`` in ``target_frame`` at ``stamp``, metres.

        Args:
            point: the click; an empty ``header.frame_id`` is taken to be ``target_frame``
                (clients that do not fill the header).
            target_frame: the cloud's frame; None (no cloud yet, nothing to click on) returns
                the point as given.
            timeout_s: the longest wait for the transform, seconds.
            stamp: the stamp of the cloud the click was made on (RViz drew it with the
                transform at that time); None or zero: the latest transform.

        Raises:
            ClickRejectedError: tf2 is missing, or no transform within ``timeout_s``.
        """
        source = point.header.frame_id
        if target_frame is None or not source or source == target_frame:
            return (point.point.x, point.point.y, point.point.z)
        if not self._ensure_tf2():
            raise ClickRejectedError(
                f"click is in frame '{source}' but the cloud is in '{target_frame}', and tf2 is "
                f"missing ({self._tf2_missing}): click in '{target_frame}' (set RViz's fixed "
                f"frame to it) or install tf2_ros")
        try:
            matrix = self._lookup(target_frame, source, stamp, timeout_s)
        except Exception as error:  # tf2 raises several unrelated exception types
            raise ClickRejectedError(
                f"cannot transform click from '{source}' to '{target_frame}' at the cloud's "
                f"stamp ({stamp_text(stamp)}) within {timeout_s:g} s: {error}") from error
        moved = matrix[:3, :3] @ [point.point.x, point.point.y, point.point.z] + matrix[:3, 3]
        return (float(moved[0]), float(moved[1]), float(moved[2]))

    def pose(self, fixed_frame: str, frame: str, stamp: Time | None,
             timeout_s: float) -> tuple[np.ndarray | None, str]:
        """(4, 4) float64 ``fixed_frame`` <- ``frame`` at ``stamp`` and "" - or None and why
        not (tf2 missing, no transform within ``timeout_s``). The same frame: identity."""
        if frame == fixed_frame:
            return np.eye(4), ""
        if not frame:
            return None, "the cloud has no frame_id"
        if not self._ensure_tf2():
            return None, f"tf2 is missing ({self._tf2_missing})"
        try:
            return self._lookup(fixed_frame, frame, stamp, timeout_s), ""
        except Exception as error:  # tf2 raises several unrelated exception types
            return None, (f"no transform from '{frame}' to '{fixed_frame}' at "
                          f"{stamp_text(stamp)} within {timeout_s:g} s: {error}")

"""Bring a click into the cloud's frame: directly when the frames match, with tf2 otherwise.

tf2 (``tf2_ros`` + ``tf2_geometry_msgs``) is imported lazily on the first click that needs it, so
the node runs where tf2 is not installed (the PyPI wheels have none); such clicks are then
rejected with a reason instead of being silently misplaced.
"""
from __future__ import annotations

from geometry_msgs.msg import PointStamped
from rclpy.duration import Duration
from rclpy.node import Node

from npiseg_ros.core.errors import ClickRejectedError

__all__ = ["ClickTransformer"]


class ClickTransformer:
    """Transforms click points into a target frame, creating a tf2 listener on first need."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._buffer = None
        self._listener = None
        self._tf2_missing: str | None = None

    def _ensure_tf2(self) -> None:
        if self._buffer is not None or self._tf2_missing is not None:
            return
        try:
            import tf2_geometry_msgs  # noqa: F401 (registers PointStamped with tf2)
            import tf2_ros
        except ImportError as error:
            self._tf2_missing = str(error)
            return
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, self._node, spin_thread=False)

    def to_frame(self, point: PointStamped, target_frame: str | None,
                 timeout_s: float) -> tuple[float, float, float]:
        """(x, y, z) of ``point`` in ``target_frame``, metres.

        An empty ``point.header.frame_id`` is taken to be the target frame (clients that do not
        fill the header); ``target_frame`` None (no cloud yet, nothing to click on) returns the
        point as given. Raises ClickRejectedError when the transform is unavailable.
        """
        source = point.header.frame_id
        if target_frame is None or not source or source == target_frame:
            return (point.point.x, point.point.y, point.point.z)
        self._ensure_tf2()
        if self._buffer is None:
            raise ClickRejectedError(
                f"click is in frame '{source}' but the cloud is in '{target_frame}', and tf2 is "
                f"not available to transform it ({self._tf2_missing}); click in "
                f"'{target_frame}' (set RViz's fixed frame to it) or install tf2_ros")
        try:
            # Latest transform: RViz stamps clicks with its own clock, which may lead the tf tree.
            request = PointStamped(point=point.point)
            request.header.frame_id = source
            moved = self._buffer.transform(request, target_frame,
                                           timeout=Duration(seconds=timeout_s))
        except Exception as error:  # tf2 raises several unrelated exception types
            raise ClickRejectedError(
                f"cannot transform click from '{source}' to '{target_frame}': {error}") from error
        return (moved.point.x, moved.point.y, moved.point.z)

"""Rigid transforms of ``geometry_msgs/Transform`` messages as 4x4 matrices, and back.

Duck-typed like :mod:`~npiseg_ros.io.pointcloud2`: rclpy's messages and the ``rosbags`` classes
alike (anything with ``translation.x/y/z`` and ``rotation.x/y/z/w``). The node's tf2 lookups
(``ros/frames.py``) and the browser tool's bag reader and writer (``annotate/bag.py``) use these.
"""
from __future__ import annotations

import numpy as np

__all__ = ["transform_matrix", "quaternion"]


def transform_matrix(transform) -> np.ndarray:
    """(4, 4) float64 matrix of a ``geometry_msgs/Transform`` (translation + quaternion, any
    non-zero norm): ``x_target = M @ x_source``.

    Raises:
        ValueError: the rotation is a zero quaternion.
    """
    q = transform.rotation
    x, y, z, w = float(q.x), float(q.y), float(q.z), float(q.w)
    norm = x * x + y * y + z * z + w * w
    if not norm > 0:
        raise ValueError("transform rotation is a zero quaternion")
    s = 2.0 / norm
    matrix = np.eye(4)
    matrix[:3, :3] = [
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)]]
    t = transform.translation
    matrix[:3, 3] = [float(t.x), float(t.y), float(t.z)]
    return matrix


def quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a (3, 3) rotation matrix, from its largest diagonal term (any
    rotation, also half turns where w is 0)."""
    m = np.asarray(rotation, np.float64)
    trace = np.trace(m)
    if trace > max(m[0, 0], m[1, 1], m[2, 2]):
        w = np.sqrt(1.0 + trace) / 2.0
        x, y, z = (m[2, 1] - m[1, 2]) / (4 * w), (m[0, 2] - m[2, 0]) / (4 * w), \
            (m[1, 0] - m[0, 1]) / (4 * w)
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        q = np.zeros(3)
        q[i] = np.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 0.0)) / 2.0
        q[j] = (m[j, i] + m[i, j]) / (4 * q[i])
        q[k] = (m[k, i] + m[i, k]) / (4 * q[i])
        w = (m[k, j] - m[j, k]) / (4 * q[i])
        x, y, z = q
    return float(x), float(y), float(z), float(w)

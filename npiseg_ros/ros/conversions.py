"""PointCloud2 messages <-> numpy: the rclpy side of :mod:`npiseg_ros.io.pointcloud2`.

The layouts, byte orders, colours and every check live in :mod:`npiseg_ros.io` (no ROS); this
module only reads the header of incoming messages and builds outgoing ``sensor_msgs`` messages.
Every malformed message raises :class:`~npiseg_ros.core.errors.InvalidCloudError` with a reason a
user can act on; the node reports it on ``~/state`` and keeps running.
"""
from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from npiseg_ros.io.colors import id_palette, label_colors, object_color, pack_rgb, unpack_rgb
from npiseg_ros.io.pointcloud2 import MAX_ABS_COORDINATE, PackedPoints, decode_message

__all__ = [
    "CloudArrays",
    "cloud_to_arrays",
    "arrays_to_cloud",
    "OutputClouds",
    "segmented_cloud",
    "uncertainty_cloud",
    "NO_LABEL",
    # re-exported from npiseg_ros.io for the callers of this module
    "label_colors",
    "object_color",
    "pack_rgb",
    "unpack_rgb",
    "MAX_ABS_COORDINATE",
]

NO_LABEL = 0
"""``label`` published for points dropped by the core (non-finite x/y/z). Those points keep their
NaN coordinates, so viewers do not draw them; 0 keeps RViz's label colour scale meaningful."""


@dataclass(frozen=True)
class CloudArrays:
    """A PointCloud2 decoded into numpy arrays (row-major for organised clouds).

    Attributes:
        xyz: (N, 3) float32 point coordinates, metres, in ``frame_id``; may contain NaN.
        colors: (N, 3) float32 RGB in [0, 1], or None when the cloud has no colour field.
        intensity: (N,) float32, or None when the cloud has no ``intensity`` field.
        height: rows of the cloud (1 for unorganised clouds).
        width: points per row.
        frame_id: frame of the coordinates.
        stamp: acquisition time from the message header.
    """

    xyz: np.ndarray
    colors: np.ndarray | None
    intensity: np.ndarray | None
    height: int
    width: int
    frame_id: str
    stamp: Time

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


def cloud_to_arrays(msg: PointCloud2, max_points: int | None = None) -> CloudArrays:
    """Decode a PointCloud2 into coordinates and optional colour / intensity.

    Args:
        msg: any layout :func:`npiseg_ros.io.pointcloud2.decode_cloud` reads (float or integer
            x/y/z, optional rgb/rgba/r/g/b/intensity, either byte order, organised or not,
            padded); NaN points allowed (the core drops them).
        max_points: reject clouds with more points (None or <= 0: no limit).

    Returns:
        CloudArrays with N = height * width points in row-major order.

    Raises:
        InvalidCloudError: see :func:`~npiseg_ros.io.pointcloud2.decode_cloud`.
    """
    cloud = decode_message(msg, max_points=max_points)
    return CloudArrays(
        xyz=cloud.xyz,
        colors=cloud.colors,
        intensity=cloud.intensity,
        height=cloud.height,
        width=cloud.width,
        frame_id=msg.header.frame_id,
        stamp=msg.header.stamp,
    )


def _message(packed: PackedPoints, header: Header) -> PointCloud2:
    """The PointCloud2 of ``packed``'s records (one copy of the bytes)."""
    msg = PointCloud2(
        header=header, height=packed.height, width=packed.width,
        fields=[PointField(name=field.name, offset=field.offset, datatype=field.datatype,
                           count=field.count) for field in packed.fields],
        is_bigendian=False, point_step=packed.point_step, row_step=packed.row_step,
        is_dense=False)
    # Assigning an array.array('B') skips rclpy's per-byte field check
    # (ROS_PYTHON_CHECK_FIELDS); one copy of the packed records.
    data = array.array("B")
    data.frombytes(packed.points.view(np.uint8))
    msg.data = data
    return msg


def arrays_to_cloud(
    header: Header,
    columns: list[tuple[str, np.ndarray]],
    height: int = 1,
    width: int | None = None,
) -> PointCloud2:
    """Pack equal-length 1-D arrays into a dense little-endian PointCloud2.

    Args:
        header: copied into the message (frame and stamp of the points).
        columns: (field name, (N,) array) in field order; each array's dtype decides the
            PointField datatype (int8..uint32, float32, float64).
        height: rows for an organised cloud (1: unorganised).
        width: points per row (default N // height).
    """
    if not columns:
        raise ValueError("at least one column is needed")
    num_points = int(columns[0][1].shape[0])
    packed = PackedPoints([(name, values.dtype) for name, values in columns], num_points,
                          height, width)
    for name, values in columns:
        packed.write(name, values)
    return _message(packed, header)


class OutputClouds:
    """The node's two output clouds for ONE input cloud, built again after every click.

    The x, y, z columns never change between the clicks on a cloud, so they are packed once;
    each click writes only its label, uncertainty and colour columns and copies the packed
    records once into the message (on the bundled 124,668-point sweep ~3x faster than packing
    every column per click).

    Args:
        xyz: (N, 3) float coordinates, metres; NaN rows stay NaN.
        height, width: keep the input's organisation so indices line up with the input cloud.
    """

    def __init__(self, xyz: np.ndarray, height: int = 1, width: int | None = None) -> None:
        num_points = int(xyz.shape[0])
        self._segmented = PackedPoints(
            [("x", np.float32), ("y", np.float32), ("z", np.float32), ("label", np.uint32),
             ("uncertainty", np.float32), ("rgb", np.float32)], num_points, height, width)
        self._uncertainty = PackedPoints(
            [("x", np.float32), ("y", np.float32), ("z", np.float32),
             ("intensity", np.float32)], num_points, height, width)
        for packed in (self._segmented, self._uncertainty):
            for axis, name in enumerate("xyz"):
                packed.write(name, xyz[:, axis].astype(np.float32))

    def segmented(self, header: Header, labels: np.ndarray,
                  uncertainty: np.ndarray) -> PointCloud2:
        """The ``~/segmented`` message: x, y, z, label (uint32), uncertainty (float32), rgb.

        Args:
            labels: (N,) int object id per point, -1 for points the core dropped (published
                as :data:`NO_LABEL`).
            uncertainty: (N,) float per-point uncertainty (NaN for dropped points).
        """
        labels = np.asarray(labels)
        shown = np.where(labels < 0, NO_LABEL, labels).astype(np.uint32)
        self._segmented.write("label", shown)
        self._segmented.write("uncertainty", np.asarray(uncertainty, dtype=np.float32))
        # the palette of the ids present, packed once, then one gather (label_colors' colours)
        palette, ids = id_palette(shown)
        self._segmented.write("rgb", pack_rgb(palette)[ids])
        return _message(self._segmented, header)

    def uncertainty(self, header: Header, uncertainty: np.ndarray) -> PointCloud2:
        """The ``~/uncertainty`` message: x, y, z, intensity = per-point uncertainty (float32).

        RViz's "Intensity" colour transformer reads the ``intensity`` field by default.
        """
        self._uncertainty.write("intensity", np.asarray(uncertainty, dtype=np.float32))
        return _message(self._uncertainty, header)


def segmented_cloud(
    header: Header,
    xyz: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray,
    height: int = 1,
    width: int | None = None,
) -> PointCloud2:
    """One ``~/segmented`` message (:meth:`OutputClouds.segmented`; the node keeps an
    :class:`OutputClouds` per cloud instead)."""
    return OutputClouds(xyz, height, width).segmented(header, labels, uncertainty)


def uncertainty_cloud(
    header: Header,
    xyz: np.ndarray,
    uncertainty: np.ndarray,
    height: int = 1,
    width: int | None = None,
) -> PointCloud2:
    """One ``~/uncertainty`` message (:meth:`OutputClouds.uncertainty`)."""
    return OutputClouds(xyz, height, width).uncertainty(header, uncertainty)

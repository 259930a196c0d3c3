"""PointCloud2 <-> numpy conversions: pure functions, no node, no ROS graph.

Reading builds a numpy structured dtype from the message's ``PointField`` names, offsets, types
and counts (``itemsize = point_step``, strides ``(row_step, point_step)``), so any field layout,
padding, byte order and organised/unorganised cloud is read without a per-point Python loop.
Every malformed message raises :class:`~npiseg_ros.core.errors.InvalidCloudError` with a reason a
user can act on; the node reports it on ``~/state`` and keeps running.
"""
from __future__ import annotations

import array
import colorsys
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from npiseg_ros.core.errors import InvalidCloudError

__all__ = [
    "CloudArrays",
    "cloud_to_arrays",
    "arrays_to_cloud",
    "OutputClouds",
    "segmented_cloud",
    "uncertainty_cloud",
    "label_colors",
    "pack_rgb",
    "unpack_rgb",
    "NO_LABEL",
]

# PointField datatype -> numpy scalar type code (byte order is added per message).
_FIELD_TYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_NUMPY_TO_FIELD: dict[str, int] = {code: datatype for datatype, code in _FIELD_TYPES.items()}

NO_LABEL = 0
"""``label`` published for points dropped by the core (non-finite x/y/z). Those points keep their
NaN coordinates, so viewers do not draw them; 0 keeps RViz's label colour scale meaningful."""

MAX_ABS_COORDINATE = 1e8
"""Coordinates beyond +-1e8 m (no sensor or Earth-centred frame reaches them; garbage such as
1e30 or float32 max does) are treated like NaN: the point is dropped. Voxel indices of larger
values overflow 64-bit integers."""

BACKGROUND_RGB = (150, 150, 150)
"""Display colour of background points (object id 0), 8-bit RGB."""


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


def _field_dtype(field: PointField, byte_order: str, point_step: int) -> np.dtype:
    code = _FIELD_TYPES.get(field.datatype)
    if code is None:
        raise InvalidCloudError(
            f"field '{field.name}' has unknown PointField datatype {field.datatype}")
    scalar = np.dtype(byte_order + code)
    if field.count == 0:
        raise InvalidCloudError(f"field '{field.name}' has count 0 (no values)")
    # Checked before numpy sees the count: a huge count must not build a huge dtype.
    if field.offset + field.count * scalar.itemsize > point_step:
        raise InvalidCloudError(
            f"field '{field.name}' (offset {field.offset}, {field.count} x {scalar.itemsize} "
            f"bytes) does not fit in point_step {point_step}: wrong point_step")
    return np.dtype((scalar, (field.count,))) if field.count > 1 else scalar


def _check_layout(msg: PointCloud2, max_points: int | None) -> int:
    """Validate the geometry of ``msg`` against its byte buffer; return the number of points."""
    num_points = int(msg.height) * int(msg.width)
    if num_points == 0:
        raise InvalidCloudError("the cloud is empty (height * width == 0)")
    if max_points is not None and max_points > 0 and num_points > max_points:
        raise InvalidCloudError(
            f"the cloud has {num_points} points, more than max_points={max_points}; "
            "downsample it or raise the max_points parameter")
    if msg.point_step == 0:
        raise InvalidCloudError("point_step is 0")
    if msg.row_step < msg.width * msg.point_step:
        raise InvalidCloudError(
            f"row_step {msg.row_step} is smaller than width * point_step = "
            f"{msg.width} * {msg.point_step}")
    # The last row only needs width * point_step bytes: padding after it is optional.
    needed = (msg.height - 1) * msg.row_step + msg.width * msg.point_step
    if len(msg.data) < needed:
        raise InvalidCloudError(
            f"data holds {len(msg.data)} bytes but height={msg.height}, width={msg.width}, "
            f"row_step={msg.row_step}, point_step={msg.point_step} need {needed}: "
            "the message is truncated")
    return num_points


def _read_fields(msg: PointCloud2, wanted: list[PointField]) -> np.ndarray:
    """Zero-copy (height * width,) structured view of the ``wanted`` fields of ``msg``."""
    byte_order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for field in wanted:
        field_dtype = _field_dtype(field, byte_order, msg.point_step)
        names.append(field.name)
        formats.append(field_dtype)
        offsets.append(field.offset)
    point_dtype = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    grid = np.ndarray(
        shape=(msg.height, msg.width), dtype=point_dtype, buffer=buffer,
        strides=(msg.row_step, msg.point_step))
    return grid.reshape(-1)


def _first(values: np.ndarray) -> np.ndarray:
    """First element of a count > 1 field, the field itself otherwise."""
    return values[:, 0] if values.ndim == 2 else values


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """(N,) uint32 packed 0x00RRGGBB (PCL/RViz ``rgb``) -> (N, 3) float32 RGB in [0, 1]."""
    packed = packed.astype(np.uint32, copy=False)
    channels = np.stack([(packed >> 16) & 0xFF, (packed >> 8) & 0xFF, packed & 0xFF], axis=1)
    return channels.astype(np.float32) / 255.0


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> (N,) float32 whose bits are 0x00RRGGBB, as RViz and PCL expect."""
    rgb = rgb.astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return packed.view(np.float32)


def _colors(msg: PointCloud2, fields: dict[str, PointField],
            points: np.ndarray) -> np.ndarray | None:
    for name in ("rgb", "rgba"):
        if name in fields:
            raw = _first(points[name])
            if raw.dtype.itemsize != 4:
                raise InvalidCloudError(f"field '{name}' must be 4 bytes (packed 0xAARRGGBB)")
            # Packed colour is a bit pattern, whatever datatype the field claims (PCL: FLOAT32):
            # reinterpret the 4 bytes as an unsigned integer in the message's byte order.
            order = ">" if msg.is_bigendian else "<"
            return unpack_rgb(raw.view(np.dtype(order + "u4")))
    if all(name in fields for name in ("r", "g", "b")):
        rgb = np.stack([_first(points[name]) for name in ("r", "g", "b")], axis=1)
        if np.issubdtype(rgb.dtype, np.integer):
            return rgb.astype(np.float32) / 255.0
        # Float channels in [0, 1]; a missing colour (NaN) becomes black rather than
        # rejecting the whole cloud.
        return np.clip(np.nan_to_num(rgb.astype(np.float32)), 0.0, 1.0)
    return None


def cloud_to_arrays(msg: PointCloud2, max_points: int | None = None) -> CloudArrays:
    """Decode a PointCloud2 into coordinates and optional colour / intensity.

    Args:
        msg: any layout with float or integer ``x``, ``y``, ``z`` fields, optionally ``rgb`` or
            ``rgba`` (packed 0xAARRGGBB, any 4-byte datatype), ``r``/``g``/``b``, ``intensity``;
            big- or little-endian; organised or not; padded ``point_step`` and ``row_step``;
            NaN points allowed (the core drops them). Fields with ``count > 1`` use element 0.
        max_points: reject clouds with more points (None or <= 0: no limit).

    Returns:
        CloudArrays with N = height * width points in row-major order.

    Raises:
        InvalidCloudError: empty cloud, too many points, missing or repeated x/y/z (or colour /
            intensity) fields, a field outside ``point_step`` or with count 0, ``row_step`` <
            ``width * point_step``, truncated ``data``, or no point with finite coordinates
            (coordinates beyond :data:`MAX_ABS_COORDINATE` count as non-finite).
    """
    num_points = _check_layout(msg, max_points)
    fields = {field.name: field for field in msg.fields}
    optional = ("rgb", "rgba", "r", "g", "b", "intensity")
    names = [field.name for field in msg.fields]
    twice = sorted({name for name in names if names.count(name) > 1 and
                    name in ("x", "y", "z", *optional)})
    if twice:
        raise InvalidCloudError(f"field(s) {', '.join(twice)} appear more than once")
    missing = [axis for axis in ("x", "y", "z") if axis not in fields]
    if missing:
        present = ", ".join(sorted(fields)) or "none"
        raise InvalidCloudError(
            f"the cloud has no {'/'.join(missing)} field (fields: {present})")
    wanted = [fields[name] for name in ("x", "y", "z", *optional) if name in fields]
    points = _read_fields(msg, wanted)

    xyz = np.empty((num_points, 3), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32: inf
        for column, axis in enumerate(("x", "y", "z")):
            xyz[:, column] = _first(points[axis])
        xyz[np.abs(xyz) > MAX_ABS_COORDINATE] = np.nan   # dropped like NaN points
    if not np.isfinite(xyz).all(axis=1).any():
        raise InvalidCloudError(f"all {num_points} points have non-finite (NaN/inf) coordinates "
                                f"or coordinates beyond {MAX_ABS_COORDINATE:g} m")
    intensity = None
    if "intensity" in fields:
        with np.errstate(over="ignore", invalid="ignore"):
            intensity = _first(points["intensity"]).astype(np.float32)
        # A missing or overflowing value of a point that is used becomes 0 rather than NaN
        # through the whole network (dropped points keep theirs: nothing reads them).
        intensity[~np.isfinite(intensity) & np.isfinite(xyz).all(axis=1)] = 0.0
    return CloudArrays(
        xyz=xyz,
        colors=_colors(msg, fields, points),
        intensity=intensity,
        height=int(msg.height),
        width=int(msg.width),
        frame_id=msg.header.frame_id,
        stamp=msg.header.stamp,
    )


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
    packed = _PackedPoints([(name, values.dtype) for name, values in columns], num_points,
                           height, width)
    for name, values in columns:
        packed.write(name, values)
    return packed.message(header)


class _PackedPoints:
    """A reusable little-endian point record array and its PointField layout."""

    def __init__(self, layout: list[tuple[str, np.dtype]], num_points: int, height: int = 1,
                 width: int | None = None) -> None:
        if width is None:
            width = num_points // max(height, 1)
        if height * width != num_points:
            raise ValueError(f"height * width = {height} * {width} != {num_points} points")
        self.dtype = np.dtype([(name, np.dtype(dtype).newbyteorder("<")) for name, dtype in layout])
        self.points = np.empty(num_points, dtype=self.dtype)
        self.height, self.width = height, width
        self.fields = []
        for name, dtype in layout:
            datatype = _NUMPY_TO_FIELD.get(np.dtype(dtype).str[1:])
            if datatype is None:
                raise ValueError(f"column '{name}' has unsupported dtype {np.dtype(dtype)}")
            self.fields.append(PointField(name=name, offset=self.dtype.fields[name][1],
                                          datatype=datatype, count=1))

    def write(self, name: str, values: np.ndarray) -> None:
        if values.shape != self.points.shape:
            raise ValueError(f"column '{name}' has shape {values.shape}, "
                             f"expected ({self.points.shape[0]},)")
        self.points[name] = values

    def message(self, header: Header) -> PointCloud2:
        msg = PointCloud2(
            header=header, height=self.height, width=self.width, fields=list(self.fields),
            is_bigendian=False, point_step=self.dtype.itemsize,
            row_step=self.dtype.itemsize * self.width, is_dense=False)
        # Assigning an array.array('B') skips rclpy's per-byte field check
        # (ROS_PYTHON_CHECK_FIELDS); one copy of the packed records.
        data = array.array("B")
        data.frombytes(self.points.view(np.uint8))
        msg.data = data
        return msg


def label_colors(labels: np.ndarray) -> np.ndarray:
    """Display colour per object id: (N,) int -> (N, 3) uint8 RGB.

    Background (0) and invalid labels are grey; object ids walk the hue circle by the golden
    ratio so that consecutive ids get clearly different, stable colours for any number of objects.
    """
    palette, ids = _id_palette(labels)
    return palette[ids]


def _id_palette(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) object ids -> ((max id + 1, 3) uint8 colours of the ids present, (N,) int64 row of
    every point): a lookup table over the ids present (bincount, no sort), O(N) for any number
    of points; invalid (negative) ids take the background's row."""
    ids = np.maximum(np.asarray(labels, dtype=np.int64), 0).reshape(-1)
    present = np.flatnonzero(np.bincount(ids))
    palette = np.zeros((int(present[-1]) + 1 if present.size else 1, 3), dtype=np.uint8)
    for object_id in present:
        palette[object_id] = object_color(int(object_id))
    return palette, ids


def object_color(object_id: int) -> tuple[int, int, int]:
    """8-bit RGB display colour of one object id (grey for background and invalid ids)."""
    if object_id <= 0:
        return BACKGROUND_RGB
    hue = (object_id * 0.6180339887) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return int(red * 255), int(green * 255), int(blue * 255)


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
        self._segmented = _PackedPoints(
            [("x", np.float32), ("y", np.float32), ("z", np.float32), ("label", np.uint32),
             ("uncertainty", np.float32), ("rgb", np.float32)], num_points, height, width)
        self._uncertainty = _PackedPoints(
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
        palette, ids = _id_palette(shown)
        self._segmented.write("rgb", pack_rgb(palette)[ids])
        return self._segmented.message(header)

    def uncertainty(self, header: Header, uncertainty: np.ndarray) -> PointCloud2:
        """The ``~/uncertainty`` message: x, y, z, intensity = per-point uncertainty (float32).

        RViz's "Intensity" colour transformer reads the ``intensity`` field by default.
        """
        self._uncertainty.write("intensity", np.asarray(uncertainty, dtype=np.float32))
        return self._uncertainty.message(header)


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

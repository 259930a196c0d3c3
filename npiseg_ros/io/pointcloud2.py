"""PointCloud2 field layouts <-> numpy, for any message with the PointCloud2 attributes.

A message is duck-typed: anything with ``height``, ``width``, ``fields``, ``is_bigendian``,
``point_step``, ``row_step`` and ``data``, whose fields have ``name``, ``offset``, ``datatype``
and ``count`` (rclpy's ``sensor_msgs.msg.PointCloud2`` and the ``rosbags`` message classes).

Decoding builds a numpy structured dtype from the fields (``itemsize = point_step``, strides
``(row_step, point_step)``), so any field layout, padding, byte order and organised or
unorganised cloud is read without a per-point loop and without copying the buffer. Every
malformed message raises :class:`~npiseg_ros.core.errors.InvalidCloudError` with a reason a
user can act on. Encoding packs equal-length columns into dense little-endian records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from npiseg_ros.core.errors import InvalidCloudError
from npiseg_ros.io.colors import unpack_rgb

__all__ = ["FieldSpec", "CloudLayout", "DecodedCloud", "decode_cloud", "decode_message",
           "PackedPoints", "FIELD_TYPES", "MAX_ABS_COORDINATE"]

FIELD_TYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4",
                               8: "f8"}
"""``sensor_msgs/PointField`` datatype constant (INT8 = 1 ... FLOAT64 = 8) -> numpy type code
(the byte order is added per message)."""
_NUMPY_TO_FIELD: dict[str, int] = {code: datatype for datatype, code in FIELD_TYPES.items()}

MAX_ABS_COORDINATE = 1e8
"""Coordinates beyond +-1e8 m (no sensor or Earth-centred frame reaches them; garbage such as
1e30 or float32 max does) are treated like NaN: the point is dropped. Voxel indices of larger
values overflow 64-bit integers."""

_COLOR_FIELDS = ("rgb", "rgba", "r", "g", "b")


@dataclass(frozen=True)
class FieldSpec:
    """One PointField: ``name``, byte ``offset`` in the point record, ``datatype`` (a
    :data:`FIELD_TYPES` key), ``count`` values."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True)
class CloudLayout:
    """The geometry of a PointCloud2 buffer: N = height * width points of ``point_step`` bytes,
    rows ``row_step`` bytes apart."""

    fields: tuple[FieldSpec, ...]
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool

    @classmethod
    def of(cls, msg: Any) -> CloudLayout:
        """The layout of a duck-typed PointCloud2 message (see the module docstring)."""
        fields = tuple(FieldSpec(str(field.name), int(field.offset), int(field.datatype),
                                 int(field.count)) for field in msg.fields)
        return cls(fields, int(msg.height), int(msg.width), int(msg.point_step),
                   int(msg.row_step), bool(msg.is_bigendian))


@dataclass(frozen=True)
class DecodedCloud:
    """A decoded PointCloud2 (row-major for organised clouds).

    Attributes:
        xyz: (N, 3) float32 point coordinates, metres; NaN for dropped points.
        colors: (N, 3) float32 RGB in [0, 1], or None (no colour field, or not asked for).
        intensity: (N,) float32, or None when the cloud has no ``intensity`` field.
        height: rows of the cloud (1 for unorganised clouds).
        width: points per row.
    """

    xyz: np.ndarray
    colors: np.ndarray | None
    intensity: np.ndarray | None
    height: int
    width: int


def _field_dtype(field: FieldSpec, byte_order: str, point_step: int) -> np.dtype:
    code = FIELD_TYPES.get(field.datatype)
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


def _check_layout(layout: CloudLayout, data_bytes: int, max_points: int | None) -> int:
    """Validate ``layout`` against a buffer of ``data_bytes``; return the number of points."""
    num_points = layout.height * layout.width
    if num_points == 0:
        raise InvalidCloudError("the cloud is empty (height * width == 0)")
    if max_points is not None and max_points > 0 and num_points > max_points:
        raise InvalidCloudError(
            f"the cloud has {num_points} points, more than max_points={max_points}; "
            "downsample it or raise the max_points parameter")
    if layout.point_step == 0:
        raise InvalidCloudError("point_step is 0")
    if layout.row_step < layout.width * layout.point_step:
        raise InvalidCloudError(
            f"row_step {layout.row_step} is smaller than width * point_step = "
            f"{layout.width} * {layout.point_step}")
    # The last row only needs width * point_step bytes: padding after it is optional.
    needed = (layout.height - 1) * layout.row_step + layout.width * layout.point_step
    if data_bytes < needed:
        raise InvalidCloudError(
            f"data holds {data_bytes} bytes but height={layout.height}, width={layout.width}, "
            f"row_step={layout.row_step}, point_step={layout.point_step} need {needed}: "
            "the message is truncated")
    return num_points


def _read_fields(layout: CloudLayout, buffer: np.ndarray,
                 wanted: list[FieldSpec]) -> np.ndarray:
    """Zero-copy (height * width,) structured view of the ``wanted`` fields."""
    byte_order = ">" if layout.is_bigendian else "<"
    point_dtype = np.dtype({
        "names": [field.name for field in wanted],
        "formats": [_field_dtype(field, byte_order, layout.point_step) for field in wanted],
        "offsets": [field.offset for field in wanted],
        "itemsize": layout.point_step})
    grid = np.ndarray(shape=(layout.height, layout.width), dtype=point_dtype, buffer=buffer,
                      strides=(layout.row_step, layout.point_step))
    return grid.reshape(-1)


def _first(values: np.ndarray) -> np.ndarray:
    """First element of a count > 1 field, the field itself otherwise."""
    return values[:, 0] if values.ndim == 2 else values


def _colors(layout: CloudLayout, names: set[str], points: np.ndarray) -> np.ndarray | None:
    for name in ("rgb", "rgba"):
        if name in names:
            raw = _first(points[name])
            if raw.dtype.itemsize != 4:
                raise InvalidCloudError(f"field '{name}' must be 4 bytes (packed 0xAARRGGBB)")
            # Packed colour is a bit pattern, whatever datatype the field claims (PCL: FLOAT32):
            # reinterpret the 4 bytes as an unsigned integer in the message's byte order.
            order = ">" if layout.is_bigendian else "<"
            return unpack_rgb(raw.view(np.dtype(order + "u4")))
    if all(name in names for name in ("r", "g", "b")):
        rgb = np.stack([_first(points[name]) for name in ("r", "g", "b")], axis=1)
        if np.issubdtype(rgb.dtype, np.integer):
            return rgb.astype(np.float32) / 255.0
        # Float channels in [0, 1]; a missing colour (NaN) becomes black rather than
        # rejecting the whole cloud.
        return np.clip(np.nan_to_num(rgb.astype(np.float32)), 0.0, 1.0)
    return None


def _buffer(data: Any) -> np.ndarray:
    """The message's ``data`` (bytes, array.array, memoryview or uint8 ndarray) as a uint8
    array, without a copy where the object exposes its buffer."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints, a non-contiguous array
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)


def decode_cloud(layout: CloudLayout, data: Any, *, max_points: int | None = None,
                 colors: bool = True) -> DecodedCloud:
    """Decode the points of a PointCloud2 buffer.

    Args:
        layout: the message's geometry and fields (:meth:`CloudLayout.of`). Any layout with
            float or integer ``x``, ``y``, ``z`` fields, optionally ``rgb`` or ``rgba`` (packed
            0xAARRGGBB, any 4-byte datatype), ``r``/``g``/``b``, ``intensity``; big- or
            little-endian; organised or not; padded ``point_step`` and ``row_step``. Fields with
            ``count > 1`` use element 0.
        data: the message's byte buffer.
        max_points: reject clouds with more points (None or <= 0: no limit).
        colors: decode the colour fields; False leaves them unread (``colors`` None).

    Returns:
        N = height * width points in row-major order. Coordinates beyond
        :data:`MAX_ABS_COORDINATE` become NaN; a non-finite intensity of a point with finite
        coordinates becomes 0.

    Raises:
        InvalidCloudError: empty cloud, too many points, missing or repeated x/y/z (or colour /
            intensity) fields, a field outside ``point_step`` or with count 0, ``row_step`` <
            ``width * point_step``, truncated ``data``, or no point with finite coordinates.
    """
    buffer = _buffer(data)
    num_points = _check_layout(layout, buffer.size, max_points)
    fields = {field.name: field for field in layout.fields}
    optional = (*(_COLOR_FIELDS if colors else ()), "intensity")
    names = [field.name for field in layout.fields]
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
    points = _read_fields(layout, buffer, wanted)

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
    return DecodedCloud(xyz=xyz, colors=_colors(layout, set(fields), points) if colors else None,
                        intensity=intensity, height=layout.height, width=layout.width)


def decode_message(msg: Any, *, max_points: int | None = None,
                   colors: bool = True) -> DecodedCloud:
    """:func:`decode_cloud` of a duck-typed PointCloud2 message."""
    return decode_cloud(CloudLayout.of(msg), msg.data, max_points=max_points, colors=colors)


class PackedPoints:
    """A reusable dense little-endian point record array and its PointField layout.

    Args:
        layout: (field name, numpy dtype) in field order; int8..uint32, float32, float64.
        num_points: N.
        height: rows for an organised cloud (1: unorganised).
        width: points per row (default N // height).

    Attributes:
        points: (N,) structured array, one little-endian record per point (no padding).
        fields: the PointField of every column.
    """

    def __init__(self, layout: list[tuple[str, np.dtype]], num_points: int, height: int = 1,
                 width: int | None = None) -> None:
        if width is None:
            width = num_points // max(height, 1)
        if height * width != num_points:
            raise ValueError(f"height * width = {height} * {width} != {num_points} points")
        self.dtype = np.dtype([(name, np.dtype(dtype).newbyteorder("<"))
                               for name, dtype in layout])
        self.points = np.empty(num_points, dtype=self.dtype)
        self.height, self.width = height, width
        self.fields: list[FieldSpec] = []
        for name, dtype in layout:
            datatype = _NUMPY_TO_FIELD.get(np.dtype(dtype).str[1:])
            if datatype is None:
                raise ValueError(f"column '{name}' has unsupported dtype {np.dtype(dtype)}")
            self.fields.append(FieldSpec(name, self.dtype.fields[name][1], datatype, 1))

    @property
    def point_step(self) -> int:
        return self.dtype.itemsize

    @property
    def row_step(self) -> int:
        return self.dtype.itemsize * self.width

    def write(self, name: str, values: np.ndarray) -> None:
        """Fill column ``name`` with (N,) ``values`` (cast to the column's dtype)."""
        if values.shape != self.points.shape:
            raise ValueError(f"column '{name}' has shape {values.shape}, "
                             f"expected ({self.points.shape[0]},)")
        self.points[name] = values

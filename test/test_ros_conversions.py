"""PointCloud2 <-> numpy conversions on hand-built (struct-packed) messages, no node."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

try:
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.core.errors import InvalidCloudError
from npiseg_ros.io.colors import BACKGROUND_RGB
from npiseg_ros.ros import conversions as conv

F32, F64, U8, U16, U32 = (PointField.FLOAT32, PointField.FLOAT64, PointField.UINT8,
                          PointField.UINT16, PointField.UINT32)


def make_msg(fields, point_step, rows, height=1, width=None, row_step=None,
             big_endian=False, frame="lidar"):
    """PointCloud2 from per-point byte strings laid out row by row (``rows``: list of rows)."""
    width = len(rows[0]) if width is None else width
    row_step = width * point_step if row_step is None else row_step
    data = b""
    for row in rows:
        packed = b"".join(point.ljust(point_step, b"\0") for point in row)
        data += packed.ljust(row_step, b"\xee")
    msg = PointCloud2()
    msg.header = Header(frame_id=frame)
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in fields]
    msg.is_bigendian = big_endian
    msg.point_step, msg.row_step = point_step, row_step
    msg.data = data
    return msg


XYZ_FIELDS = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)]


def test_plain_xyz_unorganised():
    points = [(1.0, 2.0, 3.0), (-4.5, 0.25, 8.0)]
    msg = make_msg(XYZ_FIELDS, 12, [[struct.pack("<3f", *p) for p in points]])
    cloud = conv.cloud_to_arrays(msg)
    assert cloud.xyz.dtype == np.float32 and cloud.xyz.shape == (2, 3)
    np.testing.assert_array_equal(cloud.xyz, np.array(points, dtype=np.float32))
    assert cloud.colors is None and cloud.intensity is None
    assert (cloud.height, cloud.width, cloud.frame_id) == (1, 2, "lidar")


def test_padded_point_step_and_packed_float_rgb():
    # PCL's PointXYZRGB layout: x y z pad, rgb at 16, point_step 32.
    fields = XYZ_FIELDS + [("rgb", 16, F32, 1)]
    rgb_bits = (200 << 16) | (100 << 8) | 50
    point = struct.pack("<3f4x", 1.0, 2.0, 3.0) + struct.pack("<I", rgb_bits)
    msg = make_msg(fields, 32, [[point, point]])
    cloud = conv.cloud_to_arrays(msg)
    np.testing.assert_array_equal(cloud.xyz[1], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(cloud.colors[0], np.array([200, 100, 50]) / 255.0, rtol=1e-6)


def test_rgba_uint32_ignores_alpha():
    fields = XYZ_FIELDS + [("rgba", 12, U32, 1)]
    point = struct.pack("<3fI", 0, 0, 0, (0x80 << 24) | (10 << 16) | (20 << 8) | 30)
    cloud = conv.cloud_to_arrays(make_msg(fields, 16, [[point]]))
    np.testing.assert_allclose(cloud.colors[0] * 255.0, [10, 20, 30], atol=1e-4)


def test_big_endian_with_rgb_and_intensity():
    fields = XYZ_FIELDS + [("intensity", 12, F32, 1), ("rgb", 16, U32, 1)]
    point = struct.pack(">4fI", 1.5, -2.0, 0.5, 7.0, (1 << 16) | (2 << 8) | 3)
    msg = make_msg(fields, 20, [[point]], big_endian=True)
    cloud = conv.cloud_to_arrays(msg)
    np.testing.assert_array_equal(cloud.xyz[0], [1.5, -2.0, 0.5])
    assert cloud.intensity[0] == 7.0
    np.testing.assert_allclose(cloud.colors[0] * 255.0, [1, 2, 3], atol=1e-4)


def test_count_greater_than_one_and_float64_and_uint16_intensity():
    # A 3-vector "normal" field before the coordinates, float64 coordinates, uint16 intensity.
    fields = [("normal", 0, F32, 3), ("x", 12, F64, 1), ("y", 20, F64, 1), ("z", 28, F64, 1),
              ("intensity", 36, U16, 1)]
    point = struct.pack("<3f3dH", 9, 9, 9, 0.1, 0.2, 0.3, 4000)
    cloud = conv.cloud_to_arrays(make_msg(fields, 40, [[point]]))
    np.testing.assert_allclose(cloud.xyz[0], [0.1, 0.2, 0.3], rtol=1e-6)
    assert cloud.intensity.dtype == np.float32 and cloud.intensity[0] == 4000


def test_organised_cloud_with_row_padding_and_nan():
    rows = [[struct.pack("<3f", r, c, 1.0) for c in range(3)] for r in range(2)]
    rows[1][2] = struct.pack("<3f", math.nan, math.nan, math.nan)
    msg = make_msg(XYZ_FIELDS, 12, rows, height=2, width=3, row_step=12 * 3 + 8)
    cloud = conv.cloud_to_arrays(msg)
    assert (cloud.height, cloud.width, cloud.num_points) == (2, 3, 6)
    np.testing.assert_array_equal(cloud.xyz[4], [1.0, 1.0, 1.0])  # row-major
    assert np.isnan(cloud.xyz[5]).all()


def test_last_row_padding_is_optional():
    rows = [[struct.pack("<3f", r, 0, 0)] for r in range(2)]
    msg = make_msg(XYZ_FIELDS, 12, rows, height=2, width=1, row_step=16)
    msg.data = bytes(msg.data)[:16 + 12]
    np.testing.assert_array_equal(conv.cloud_to_arrays(msg).xyz[:, 0], [0, 1])


def test_separate_uint8_rgb_fields():
    fields = XYZ_FIELDS + [("r", 12, U8, 1), ("g", 13, U8, 1), ("b", 14, U8, 1)]
    point = struct.pack("<3f3B", 0, 0, 0, 255, 0, 51)
    cloud = conv.cloud_to_arrays(make_msg(fields, 16, [[point]]))
    np.testing.assert_allclose(cloud.colors[0], [1.0, 0.0, 0.2], rtol=1e-6)


@pytest.mark.parametrize("case, reason", [
    ("no_z", "no z field"),
    ("empty", "empty"),
    ("short_point_step", "wrong point_step"),
    ("small_row_step", "row_step"),
    ("truncated", "truncated"),
    ("all_nan", "non-finite"),
    ("too_many", "max_points"),
    ("bad_datatype", "unknown PointField datatype"),
])
def test_bad_clouds_raise_with_reason(case, reason):
    points = [struct.pack("<3f", i, i, i) for i in range(4)]
    fields, point_step, max_points = list(XYZ_FIELDS), 12, None
    msg = make_msg(fields, point_step, [points])
    if case == "no_z":
        msg.fields = msg.fields[:2]
    elif case == "empty":
        msg = make_msg(fields, 12, [[]], width=0)
    elif case == "short_point_step":
        msg.point_step, msg.row_step = 8, 32
    elif case == "small_row_step":
        msg.row_step = 40
    elif case == "truncated":
        msg.data = bytes(msg.data)[:-5]
    elif case == "all_nan":
        msg = make_msg(fields, 12, [[struct.pack("<3f", math.nan, 0, 0)] * 3])
    elif case == "too_many":
        max_points = 3
    elif case == "bad_datatype":
        msg.fields[0].datatype = 42
    with pytest.raises(InvalidCloudError, match=reason):
        conv.cloud_to_arrays(msg, max_points=max_points)


def test_arrays_to_cloud_round_trip_and_data_type():
    xyz = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    intensity = np.arange(10, dtype=np.float32)
    msg = conv.arrays_to_cloud(Header(frame_id="map"), [
        ("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2]), ("intensity", intensity)],
        height=2, width=5)
    assert msg.point_step == 16 and msg.row_step == 80 and (msg.height, msg.width) == (2, 5)
    cloud = conv.cloud_to_arrays(msg)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.intensity, intensity)


def test_segmented_cloud_fields_labels_and_colours():
    xyz = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [np.nan] * 3], dtype=np.float32)
    labels = np.array([0, 1, 2, -1], dtype=np.int32)
    uncertainty = np.array([0.1, 0.2, 0.3, np.nan], dtype=np.float32)
    msg = conv.segmented_cloud(Header(frame_id="lidar"), xyz, labels, uncertainty)
    layout = [(f.name, f.datatype, f.count) for f in msg.fields]
    assert layout == [("x", F32, 1), ("y", F32, 1), ("z", F32, 1), ("label", U32, 1),
                      ("uncertainty", F32, 1), ("rgb", F32, 1)]
    assert msg.width * msg.height == 4 and msg.header.frame_id == "lidar"
    record = np.frombuffer(bytes(msg.data), dtype=np.dtype(
        {"names": ["label", "uncertainty", "rgb"], "formats": ["<u4", "<f4", "<u4"],
         "offsets": [12, 16, 20], "itemsize": msg.point_step}))
    np.testing.assert_array_equal(record["label"], [0, 1, 2, conv.NO_LABEL])
    np.testing.assert_array_equal(record["uncertainty"][:3], uncertainty[:3])
    colours = conv.unpack_rgb(record["rgb"])
    assert np.allclose(colours[0], np.array(BACKGROUND_RGB) / 255.0)
    assert not np.allclose(colours[1], colours[2])
    np.testing.assert_array_equal(colours[3], colours[0])


def test_uncertainty_cloud_uses_intensity_field():
    xyz = np.zeros((3, 3), dtype=np.float32)
    msg = conv.uncertainty_cloud(Header(), xyz, np.array([0.0, 0.5, 1.0]))
    cloud = conv.cloud_to_arrays(msg)
    np.testing.assert_array_equal(cloud.intensity, [0.0, 0.5, 1.0])


def test_label_colours_are_stable_and_distinct_for_many_objects():
    ids = np.arange(1, 41)
    colours = conv.label_colors(ids)
    assert len({tuple(c) for c in colours}) == 40
    np.testing.assert_array_equal(conv.label_colors(ids[::-1])[::-1], colours)


def test_large_cloud_decodes_without_copying_per_point():
    n = 120_000
    xyz = np.random.default_rng(1).uniform(-50, 50, size=(n, 3)).astype(np.float32)
    msg = conv.arrays_to_cloud(Header(), [("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2])])
    np.testing.assert_array_equal(conv.cloud_to_arrays(msg).xyz, xyz)


def test_output_clouds_reused_per_click_equal_fresh_messages():
    """The node packs x, y, z once per cloud; every later click's messages must equal messages
    built from scratch (no column of an earlier click left behind), organised clouds too."""
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(12, 3)).astype(np.float32)
    xyz[3] = np.nan
    outputs = conv.OutputClouds(xyz, height=3, width=4)
    header = Header(frame_id="lidar")
    for labels in (np.array([0, 1, 2, -1] * 3), np.array([5, 0, 0, -1] * 3), np.zeros(12, int)):
        uncertainty = rng.random(12).astype(np.float32)
        reused = outputs.segmented(header, labels, uncertainty)
        fresh = conv.segmented_cloud(header, xyz, labels, uncertainty, height=3, width=4)
        assert bytes(reused.data) == bytes(fresh.data)
        assert (reused.height, reused.width, reused.fields) == (fresh.height, fresh.width,
                                                                fresh.fields)
        intensity = outputs.uncertainty(header, uncertainty)
        assert bytes(intensity.data) == bytes(conv.uncertainty_cloud(header, xyz, uncertainty,
                                                                     3, 4).data)
    colours = conv.unpack_rgb(np.frombuffer(bytes(reused.data), np.dtype(
        {"names": ["rgb"], "formats": ["<u4"], "offsets": [20],
         "itemsize": reused.point_step}))["rgb"])
    np.testing.assert_allclose(colours[0], np.array(BACKGROUND_RGB) / 255.0)

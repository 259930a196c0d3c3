"""npiseg_ros.io on hand-built inputs: PointCloud2 layouts from rosbags-style duck-typed
messages, packed colours, .label words, PLY / PCD bytes, atomic writes, old autosaves.
No ROS and no rosbags needed: the messages are small dataclasses with the same attributes."""
from __future__ import annotations

import array
import math
import os
import struct
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

from npiseg_ros.core.errors import InvalidCloudError
from npiseg_ros.io import autosave
from npiseg_ros.io.atomic import atomic_write, atomic_write_bytes, check_writable, previous_path
from npiseg_ros.io.colors import BACKGROUND_RGB, label_colors, object_color, pack_rgb, unpack_rgb
from npiseg_ros.io.errors import DatasetFormatError
from npiseg_ros.io.label import decode_label_words, encode_object_labels
from npiseg_ros.io.pcd import read_pcd, write_pcd
from npiseg_ros.io.ply import read_ply, write_ply_stream
from npiseg_ros.io.pointcloud2 import (MAX_ABS_COORDINATE, CloudLayout, PackedPoints,
                                       decode_cloud, decode_message)

F32, F64, U8, U16, U32 = 7, 8, 2, 4, 6   # sensor_msgs/PointField datatypes


@dataclass
class Field:
    """Like rosbags' sensor_msgs__msg__PointField."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass
class Cloud:
    """Like rosbags' sensor_msgs__msg__PointCloud2 (data: uint8 ndarray)."""

    fields: list
    width: int
    height: int = 1
    point_step: int = 12
    row_step: int = 0
    is_bigendian: bool = False
    data: object = field(default_factory=lambda: np.zeros(0, np.uint8))


XYZ = [Field("x", 0, F32), Field("y", 4, F32), Field("z", 8, F32)]


def cloud(points: list[bytes], fields=XYZ, point_step=12, **kwargs) -> Cloud:
    data = np.frombuffer(b"".join(p.ljust(point_step, b"\0") for p in points), np.uint8)
    return Cloud(list(fields), width=len(points), point_step=point_step,
                 row_step=len(points) * point_step, data=data, **kwargs)


# ------------------------------------------------------------------------------ PointCloud2


def test_rosbags_style_message_decodes_with_any_data_buffer():
    points = [struct.pack("<3f", 1.0, 2.0, 3.0), struct.pack("<3f", -4.5, 0.25, 8.0)]
    msg = cloud(points)
    expected = np.array([[1.0, 2.0, 3.0], [-4.5, 0.25, 8.0]], np.float32)
    raw = msg.data.tobytes()
    for data in (msg.data, raw, array.array("B", raw), memoryview(raw), list(raw)):
        msg.data = data
        decoded = decode_message(msg)
        np.testing.assert_array_equal(decoded.xyz, expected)
        assert decoded.colors is None and decoded.intensity is None
        assert (decoded.height, decoded.width) == (1, 2)


def test_organised_big_endian_float64_with_row_padding_and_count_greater_than_one():
    fields = [Field("normal", 0, F32, 3), Field("x", 12, F64), Field("y", 20, F64),
              Field("z", 28, F64), Field("intensity", 36, U16)]
    rows = [[struct.pack(">3f3dH", 9, 9, 9, r, c, 0.5, 10 * r + c) for c in range(2)]
            for r in range(2)]
    data = b"".join(b"".join(p.ljust(40, b"\0") for p in row) + b"\xee" * 8 for row in rows)
    msg = Cloud(fields, width=2, height=2, point_step=40, row_step=88, is_bigendian=True,
                data=np.frombuffer(data[:-8], np.uint8))   # the last row's padding is optional
    decoded = decode_message(msg)
    np.testing.assert_array_equal(decoded.xyz, [[0, 0, .5], [0, 1, .5], [1, 0, .5], [1, 1, .5]])
    assert decoded.intensity.dtype == np.float32
    assert decoded.intensity.tolist() == [0, 1, 10, 11]


@pytest.mark.parametrize("big_endian", [False, True])
def test_packed_float_rgb_is_read_as_bits_in_the_message_byte_order(big_endian):
    order = ">" if big_endian else "<"
    bits = (200 << 16) | (100 << 8) | 50
    point = struct.pack(order + "3f", 1, 2, 3) + b"\0" * 4 + struct.pack(order + "I", bits)
    msg = cloud([point], XYZ + [Field("rgb", 16, F32)], point_step=32, is_bigendian=big_endian)
    np.testing.assert_allclose(decode_message(msg).colors[0] * 255, [200, 100, 50], atol=1e-4)


def test_rgba_ignores_alpha_and_separate_channels():
    point = struct.pack("<3fI", 0, 0, 0, (0x80 << 24) | (10 << 16) | (20 << 8) | 30)
    msg = cloud([point], XYZ + [Field("rgba", 12, U32)], point_step=16)
    np.testing.assert_allclose(decode_message(msg).colors[0] * 255, [10, 20, 30], atol=1e-4)
    channels = [Field("r", 12, U8), Field("g", 13, U8), Field("b", 14, U8)]
    msg = cloud([struct.pack("<3f3B", 0, 0, 0, 255, 0, 51)], XYZ + channels, point_step=16)
    np.testing.assert_allclose(decode_message(msg).colors[0], [1.0, 0.0, 0.2], rtol=1e-6)
    floats = [Field("r", 12, F32), Field("g", 16, F32), Field("b", 20, F32)]
    msg = cloud([struct.pack("<6f", 0, 0, 0, math.nan, 2.0, 0.5)], XYZ + floats, point_step=24)
    np.testing.assert_array_equal(decode_message(msg).colors[0], [0.0, 1.0, 0.5])


def test_far_coordinates_are_dropped_and_bad_intensity_of_used_points_becomes_zero():
    fields = XYZ + [Field("intensity", 12, F32)]
    points = [struct.pack("<4f", 1, 1, 1, math.nan), struct.pack("<4f", 2e9, 0, 0, math.nan),
              struct.pack("<4f", 3, 3, 3, 5.0)]
    decoded = decode_message(cloud(points, fields, point_step=16))
    assert 2e9 > MAX_ABS_COORDINATE and np.isnan(decoded.xyz[1, 0])   # the core drops the row
    assert decoded.xyz[1, 1:].tolist() == [0.0, 0.0]
    assert decoded.intensity[0] == 0.0 and math.isnan(decoded.intensity[1])
    assert decoded.intensity[2] == 5.0


def test_colours_can_be_left_unread():
    # a 2-byte "rgb" is refused when colours are read, ignored when they are not
    point = struct.pack("<3fH", 1, 2, 3, 7)
    msg = cloud([point], XYZ + [Field("rgb", 12, U16)], point_step=16)
    with pytest.raises(InvalidCloudError, match="must be 4 bytes"):
        decode_message(msg)
    assert decode_message(msg, colors=False).colors is None


@pytest.mark.parametrize("change, reason", [
    (lambda m: setattr(m, "fields", XYZ[:2]), "no z field"),
    (lambda m: setattr(m, "fields", XYZ + [Field("x", 0, F32)]), "x appear more than once"),
    (lambda m: setattr(m, "width", 0), "empty"),
    (lambda m: setattr(m, "point_step", 0), "point_step is 0"),
    (lambda m: setattr(m, "row_step", 20), "row_step 20 is smaller"),
    (lambda m: setattr(m, "data", m.data[:-1]), "truncated"),
    (lambda m: setattr(m, "fields", XYZ[:2] + [Field("z", 8, F32, 0)]), "count 0"),
    (lambda m: setattr(m, "fields", XYZ[:2] + [Field("z", 8, F64)]), "does not fit"),
    (lambda m: setattr(m, "fields", XYZ[:2] + [Field("z", 8, 42)]), "unknown PointField"),
])
def test_malformed_layouts_raise_with_a_reason(change, reason):
    msg = cloud([struct.pack("<3f", i, i, i) for i in range(2)])
    change(msg)
    with pytest.raises(InvalidCloudError, match=reason):
        decode_message(msg)


def test_max_points_and_all_nan():
    msg = cloud([struct.pack("<3f", i, i, i) for i in range(3)])
    with pytest.raises(InvalidCloudError, match="max_points=2"):
        decode_message(msg, max_points=2)
    assert decode_message(msg, max_points=0).xyz.shape == (3, 3)   # 0: no limit
    msg = cloud([struct.pack("<3f", math.nan, 0, 0)] * 2)
    with pytest.raises(InvalidCloudError, match="non-finite"):
        decode_message(msg)


def test_packed_points_layout_and_round_trip():
    packed = PackedPoints([("x", np.float32), ("label", np.uint32), ("flag", np.uint8),
                           ("t", np.float64)], 4, height=2)
    assert [(f.name, f.offset, f.datatype, f.count) for f in packed.fields] == [
        ("x", 0, F32, 1), ("label", 4, U32, 1), ("flag", 8, U8, 1), ("t", 9, F64, 1)]
    assert (packed.point_step, packed.row_step, packed.width) == (17, 34, 2)
    packed.write("x", np.array([1.5, 2.5, 3.5, 4.5]))
    packed.write("label", np.array([1, 2, 3, 70000]))
    packed.write("flag", np.array([0, 1, 0, 1]))
    packed.write("t", np.array([0.1, 0.2, 0.3, 0.4]))
    raw = packed.points.tobytes()
    assert raw[17:34] == struct.pack("<fIBd", 2.5, 2, 1, 0.2)   # little-endian, no padding
    xyz_packed = PackedPoints([(axis, np.float32) for axis in "xyz"], 2)
    for column, axis in enumerate("xyz"):
        xyz_packed.write(axis, np.array([1.0, 2.0]) * (column + 1))
    msg = Cloud(xyz_packed.fields, width=2, point_step=xyz_packed.point_step,
                row_step=xyz_packed.row_step, data=xyz_packed.points.view(np.uint8))
    np.testing.assert_array_equal(decode_message(msg).xyz, [[1, 2, 3], [2, 4, 6]])
    layout = CloudLayout.of(msg)
    assert layout.fields[2].offset == 8 and not layout.is_bigendian
    np.testing.assert_array_equal(decode_cloud(layout, msg.data).xyz, [[1, 2, 3], [2, 4, 6]])


def test_packed_points_refuses_bad_columns():
    with pytest.raises(ValueError, match="unsupported dtype int64"):
        PackedPoints([("x", np.int64)], 3)
    with pytest.raises(ValueError, match="height \\* width"):
        PackedPoints([("x", np.float32)], 3, height=2, width=2)
    packed = PackedPoints([("x", np.float32)], 3)
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        packed.write("x", np.zeros(2))


# ----------------------------------------------------------------------------------- colours


def test_pack_and_unpack_rgb_by_hand():
    packed = pack_rgb(np.array([[200, 100, 50], [0, 0, 255]], np.uint8))
    assert packed.dtype == np.float32
    assert packed.view(np.uint32).tolist() == [0x00C86432, 0x000000FF]
    expected = np.array([[200, 100, 50], [0, 0, 255]], np.float32) / 255.0
    words = np.array([0x00C86432, 0xFF0000FF], np.uint32)   # the alpha byte is ignored
    for values in (packed, packed.astype(">f4"), words, words.astype(">u4"),
                   words.view(np.int32), words.astype(np.float64)):
        np.testing.assert_array_equal(unpack_rgb(values), expected)


def test_label_colours():
    colours = label_colors(np.array([0, -1, 1, 2, 1, 300]))
    assert colours.dtype == np.uint8 and colours.shape == (6, 3)
    assert tuple(colours[0]) == tuple(colours[1]) == BACKGROUND_RGB
    assert tuple(colours[2]) == tuple(colours[4]) == object_color(1) != object_color(2)
    assert tuple(colours[5]) == object_color(300)


# ------------------------------------------------------------------------- SemanticKITTI label


def test_label_words_by_hand():
    words = encode_object_labels(np.array([-1, 0, 1, 258, 70000]))
    assert words.dtype == np.dtype("<u4")
    assert words.tolist() == [0, 0, 0x00010001, 0x01020102, 0xFFFFFFFF]
    semantic, instance = decode_label_words(np.array([0x00010028, 0xFFFF0000], np.uint32))
    assert semantic.tolist() == [40, 0] and instance.tolist() == [1, 0xFFFF]


# ---------------------------------------------------------------------------------- PLY / PCD


def test_annotation_ply_bytes_by_hand(tmp_path):
    xyz = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])   # float64: stored as float32
    path = autosave.save_annotation(tmp_path / "a.ply", "ply", xyz, np.array([-1, 7]),
                                    np.array([0.5, 0.25]))
    header = (b"ply\nformat binary_little_endian 1.0\n"
              b"comment npiseg_ros annotation; label -1 = dropped point\nelement vertex 2\n"
              b"property float x\nproperty float y\nproperty float z\nproperty int label\n"
              b"property float uncertainty\nend_header\n")
    body = struct.pack("<3fif", 1, 2, 3, -1, 0.5) + struct.pack("<3fif", 4, 5, 6, 7, 0.25)
    assert path.read_bytes() == header + body
    fields = read_ply(path)   # comments are skipped
    assert fields["label"].tolist() == [-1, 7] and fields["z"].tolist() == [3.0, 6.0]


def test_ply_stream_ascii_with_comments(tmp_path):
    path = tmp_path / "a.ply"
    with open(path, "wb") as stream:
        write_ply_stream(stream, {"x": np.array([0.5], np.float32), "n": np.array([3])},
                         binary=False, comments=["made by hand"])
    assert path.read_bytes() == (b"ply\nformat ascii 1.0\ncomment made by hand\n"
                                 b"element vertex 1\nproperty float x\nproperty int n\n"
                                 b"end_header\n0.5 3\n")
    with pytest.raises(DatasetFormatError, match="no PLY type"):
        write_ply_stream(open(os.devnull, "wb"), {"c": np.array([1j])})


def test_pcd_ascii_by_hand_and_binary_round_trip(tmp_path):
    rgb_bits = struct.unpack("<f", struct.pack("<I", 0x00FF8000))[0]
    text = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F F\n"
            "COUNT 1 1 1 1\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA ascii\n"
            f"1 2 3 {rgb_bits!r}\n4 5 6 {rgb_bits!r}\n")
    (tmp_path / "a.pcd").write_text(text)
    fields = read_pcd(tmp_path / "a.pcd")
    assert fields["x"].tolist() == [1.0, 4.0]
    np.testing.assert_array_equal(unpack_rgb(fields["rgb"])[0] * 255, [255, 128, 0])
    write_pcd(tmp_path / "b.pcd", {"x": np.array([1.5, 2.5], np.float32),
                                   "label": np.array([3, 4])})
    data = (tmp_path / "b.pcd").read_bytes()
    assert data.endswith(struct.pack("<fi", 1.5, 3) + struct.pack("<fi", 2.5, 4))
    assert b"\nTYPE F I\n" in data and b"\nDATA binary\n" in data
    back = read_pcd(tmp_path / "b.pcd")
    assert back["label"].dtype == np.int32 and back["label"].tolist() == [3, 4]
    (tmp_path / "c.pcd").write_bytes(data.replace(b"DATA binary", b"DATA binary_compressed"))
    with pytest.raises(DatasetFormatError, match="binary_compressed"):
        read_pcd(tmp_path / "c.pcd")


# ------------------------------------------------------------------------------ atomic writes


def test_atomic_write_keeps_the_previous_generation_and_sets_the_mode(tmp_path):
    path = tmp_path / "sub" / "x.npz"
    atomic_write_bytes(path, b"one", mode=0o640)
    assert path.read_bytes() == b"one" and path.stat().st_mode & 0o777 == 0o640
    atomic_write(path, lambda file: file.write(b"two"), keep_previous=True)
    assert path.read_bytes() == b"two" and previous_path(path).read_bytes() == b"one"
    assert previous_path(path).name == "x.prev.npz"

    def fails(file):
        file.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fails, keep_previous=True)
    assert path.read_bytes() == b"two" and previous_path(path).read_bytes() == b"one"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npz", "x.prev.npz"]


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "folder")
    assert list((tmp_path / "new" / "folder").iterdir()) == []   # the probe is removed
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError):
        check_writable(tmp_path / "file" / "below")


# ------------------------------------------------------------------------------------- autosave


def test_an_autosave_in_the_first_format_still_loads(tmp_path):
    """The exact arrays the first writer (npiseg_ros/ros/annotation.py) stored."""
    fingerprint = "a" * 32
    np.savez(tmp_path / f"{fingerprint}.npz", version=np.array(1),
             fingerprint=np.array(fingerprint), frame_id=np.array("velodyne"),
             clicks=np.array([[1.0, 2.0, 3.0, 1, 4], [0.5, 0.0, 0.0, 0, 2]]),
             active_object=np.array(1), decoded_at=np.array([1, 2], np.int64),
             saved_at=np.array(1.7e9), labels=np.array([0, 1, -1], np.int32),
             uncertainty=np.array([0.1, 0.2, np.nan], np.float32))
    record, problems = autosave.recover_autosave(tmp_path, fingerprint)
    assert problems == [] and record.frame_id == "velodyne" and record.active_object == 1
    assert record.clicks == (autosave.ClickRecord((1.0, 2.0, 3.0), 1, 4),
                             autosave.ClickRecord((0.5, 0.0, 0.0), 0, 2))
    assert record.decoded_at == (1, 2) and record.labels.tolist() == [0, 1, -1]


def test_recover_falls_back_to_the_previous_generation(tmp_path):
    first = autosave.AnnotationRecord("b" * 32, "map", (), 1, decoded_at=())
    autosave.write_autosave(tmp_path, first)
    autosave.write_autosave(tmp_path, autosave.AnnotationRecord("b" * 32, "map", (), 2))
    autosave.autosave_path(tmp_path, "b" * 32).write_bytes(b"torn")
    record, problems = autosave.recover_autosave(tmp_path, "b" * 32)
    assert record.active_object == 1 and "cannot read autosave" in problems[0]
    assert (tmp_path / f"{'b' * 32}.npz.corrupt").read_bytes() == b"torn"


def test_io_imports_neither_ros_nor_torch():
    # a module set to None in sys.modules makes every import of it raise ImportError
    blocked = ("rclpy", "torch", "sensor_msgs", "rosbags", "npiseg_ros.ros", "npiseg_ros.eval")
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
            "import npiseg_ros.io.autosave, npiseg_ros.io.pointcloud2, npiseg_ros.io.pcd")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

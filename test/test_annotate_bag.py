"""npiseg-annotate inputs: rosbag2 bags the tests write themselves (sqlite3 and MCAP, through
rosbags), PointCloud2 layouts, cloud files and bad inputs, each with a clear message."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bag tests need rosbags (pip install 'npiseg_ros[annotate]')")

from npiseg_ros.annotate.bag import decode_pointcloud2, write_cloud_bag  # noqa: E402
from npiseg_ros.annotate.sources import FrameError, SourceError, open_source  # noqa: E402


def _clouds(count: int = 3, points: int = 800):
    rng = np.random.default_rng(1)
    clouds = [rng.uniform(-10, 10, (points, 3)).astype(np.float32) for _ in range(count)]
    intensities = [rng.uniform(0, 1, points).astype(np.float32) for _ in range(count)]
    poses = []
    for index in range(count):
        pose = np.eye(4)
        yaw = 0.1 * index
        pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        pose[:3, 3] = (2.0 * index, 0.5 * index, 0.0)
        poses.append(pose)
    return clouds, intensities, poses


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip(tmp_path, storage):
    clouds, intensities, poses = _clouds()
    bag = write_cloud_bag(tmp_path / "bag", clouds, intensities=intensities, poses=poses,
                          storage=storage, topic="/lidar")
    suffix = ".db3" if storage == "sqlite3" else ".mcap"
    for opened in (bag, bag / "metadata.yaml", next(bag.glob(f"*{suffix}"))):
        source = open_source(opened)
        assert source.kind == "bag" and len(source) == 3 and source.topic == "/lidar"
        assert source.describe()["tf"] is True
        for index in (2, 0, 1):  # random access
            frame = source.frame(index)
            assert np.array_equal(frame.xyz, clouds[index])
            assert np.array_equal(frame.intensity, intensities[index])
            assert frame.frame_id == "velodyne"
            assert np.allclose(frame.pose, poses[index], atol=1e-9)
        source.close()


def test_bad_inputs_give_clear_messages(tmp_path):
    clouds, _, _ = _clouds(2)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(tmp_path / "missing")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SourceError, match="not a rosbag2 bag"):
        open_source(text)
    fake = tmp_path / "fake.db3"
    fake.write_bytes(b"this is not sqlite")
    with pytest.raises(SourceError, match="not a readable rosbag2 bag"):
        open_source(fake)
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    with pytest.raises(SourceError, match="no bag"):
        open_source(empty_folder)
    bag = write_cloud_bag(tmp_path / "bag", clouds, extra_string_topic="/chatter")
    with pytest.raises(SourceError,
                       match="is std_msgs/msg/String, not sensor_msgs/msg/PointCloud2"):
        open_source(bag, topic="/chatter")
    with pytest.raises(SourceError, match="no topic '/nope'"):
        open_source(bag, topic="/nope")
    text_only = write_cloud_bag(tmp_path / "two", clouds, topic="/a")
    assert open_source(text_only).topic == "/a"


def test_empty_and_nan_frames_are_frame_errors(tmp_path):
    good = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    bag = write_cloud_bag(tmp_path / "bag", [good, np.zeros((0, 3), np.float32),
                                             np.full((50, 3), np.nan, np.float32), good])
    source = open_source(bag)
    assert len(source) == 4
    assert source.frame(0).xyz.shape == (100, 3)
    with pytest.raises(FrameError, match="is empty"):
        source.frame(1)
    with pytest.raises(FrameError, match="NaN"):
        source.frame(2)
    assert np.array_equal(source.frame(3).xyz, good)


def _field(name, offset, datatype):
    return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=1)


def test_pointcloud2_layouts():
    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    # big-endian float64 with padding and a row stride larger than the points
    record = np.zeros(4, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("pad", "V8")])
    record["x"], record["y"], record["z"] = xyz.T
    rows = record.tobytes()
    data = rows[:64] + b"\0" * 16 + rows[64:] + b"\0" * 16
    message = SimpleNamespace(fields=[_field("x", 0, 8), _field("y", 8, 8), _field("z", 16, 8)],
                              width=2, height=2, point_step=32, row_step=80, is_bigendian=True,
                              data=np.frombuffer(data, np.uint8))
    decoded, intensity = decode_pointcloud2(message)
    assert np.array_equal(decoded, xyz.astype(np.float32)) and intensity is None
    message.fields = message.fields[:2]
    with pytest.raises(FrameError, match="frame f7: the cloud has no z field"):
        decode_pointcloud2(message, "f7")
    message.fields = [_field("x", 0, 8), _field("y", 8, 8), _field("z", 30, 8)]
    with pytest.raises(FrameError, match="does not fit in point_step"):
        decode_pointcloud2(message)
    message.fields = [_field("x", 0, 8), _field("y", 8, 8), _field("z", 16, 8)]
    message.data = message.data[:100]
    with pytest.raises(FrameError, match="truncated"):
        decode_pointcloud2(message)


def test_pointcloud2_dense_rows_with_unset_row_step_and_ignored_colour():
    # x y z float32, a 2-byte "rgb" the node would refuse (colour is not read from bags)
    record = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u2"),
                                ("intensity", "<u2")])
    record["x"], record["intensity"] = (1.0, 2.0, 3.0), (7, 8, 9)
    message = SimpleNamespace(
        fields=[_field("x", 0, 7), _field("y", 4, 7), _field("z", 8, 7), _field("rgb", 12, 4),
                _field("intensity", 14, 4)],
        width=3, height=1, point_step=16, row_step=0, is_bigendian=False,
        data=np.frombuffer(record.tobytes(), np.uint8))
    xyz, intensity = decode_pointcloud2(message)
    np.testing.assert_array_equal(xyz[:, 0], [1.0, 2.0, 3.0])
    assert intensity.dtype == np.float32 and intensity.tolist() == [7.0, 8.0, 9.0]


def test_cloud_files_and_kitti_folders(tmp_path):
    from npiseg_ros.io.autosave import save_annotation

    xyz = np.random.default_rng(2).normal(size=(300, 3)).astype(np.float32)
    velodyne = tmp_path / "seq" / "velodyne"
    velodyne.mkdir(parents=True)
    for index in range(3):
        np.concatenate([xyz + index, np.zeros((300, 1), np.float32)], 1).tofile(
            velodyne / f"{index:06d}.bin")
    source = open_source(tmp_path / "seq")
    assert source.kind == "kitti" and source.names == ["000000", "000001", "000002"]
    assert np.array_equal(source.frame(2).xyz, xyz + 2)
    labels = np.zeros(300, np.int32)
    ply = save_annotation(tmp_path / "a.ply", "ply", xyz, labels, np.zeros(300, np.float32))
    npz = save_annotation(tmp_path / "b.npz", "npz", xyz, labels, np.zeros(300, np.float32))
    both = open_source([str(ply), str(npz)])
    assert both.names == ["a", "b"] and np.allclose(both.frame(1).xyz, xyz)
    # a truncated scan (not whole 16-byte points) is refused, naming the file and the bytes
    good = (velodyne / "000001.bin").read_bytes()
    broken = tmp_path / "broken.bin"
    broken.write_bytes(good[:-6])
    with pytest.raises(FrameError, match=r"broken.bin: 4794 bytes is not a whole number of "
                                         r"KITTI velodyne points .*10 bytes left over"):
        open_source(broken).frame(0)
    # ... and in a sequence folder it is that frame's error, the others stay readable
    (velodyne / "000001.bin").write_bytes(good[:-4])
    source = open_source(tmp_path / "seq")
    with pytest.raises(FrameError, match="000001.bin: 4796 bytes .*truncated"):
        source.frame(1)
    assert np.array_equal(source.frame(2).xyz, xyz + 2)
    # random bytes of a whole number of points: refused with the file's name, not a crash
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(3).bytes(16 * 5000))
    with pytest.raises(FrameError, match=r"noise.bin: \d+% of its 5000 points have NaN or "
                                         "coordinates beyond 10000 m: not a KITTI"):
        open_source(noise).frame(0)
    # a few absurd points in a real scan are left out of segmentation, not fatal
    from npiseg_ros.annotate.sources import within_range

    odd = xyz.copy()
    odd[5] = [3e38, 0, 0]
    kept = within_range("odd", odd, None)
    assert np.isnan(kept[5]).all() and np.array_equal(kept[6:], odd[6:])


def test_the_tool_needs_no_ros():
    """npiseg-annotate imports nothing of ROS (rclpy made unimportable here)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import npiseg_ros.annotate.cli, npiseg_ros.annotate.workspace, "
            "npiseg_ros.annotate.server, npiseg_ros.annotate.triage, npiseg_ros.annotate.bag\n"
            "print(sorted(m for m in sys.modules if m.startswith(('rclpy', 'rosidl'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['rclpy']"  # only the blocker itself

"""Click frames and sweep poses: same frame passes through, other frames go through tf2 AT THE
CLOUD'S STAMP when tf2 is importable (here a stand-in buffer, tf2 has no PyPI wheel), and are
rejected with a reason when it is not."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

try:
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point, PointStamped, Quaternion, Transform, TransformStamped
    from geometry_msgs.msg import Vector3
    from std_msgs.msg import Header

    from npiseg_ros.ros.frames import ClickTransformer, transform_matrix
except ImportError:  # pragma: no cover
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.core.errors import ClickRejectedError  # noqa: E402


def click(frame: str, x: float = 1.0, y: float = 2.0, z: float = 3.0) -> PointStamped:
    return PointStamped(header=Header(frame_id=frame), point=Point(x=x, y=y, z=z))


def seconds(when) -> float:
    return when.nanoseconds * 1e-9


class MovingSensorBuffer:
    """tf2 stand-in: ``lidar`` moves along x of ``map`` at 1 m/s (x = t) and is yawed 90 deg;
    a zero time means the latest transform, at ``now`` seconds."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.calls: list[tuple[str, str, float, float]] = []

    def lookup_transform(self, target, source, when, timeout):
        self.calls.append((target, source, seconds(when), seconds(timeout)))
        if "unknown" in (target, source):
            raise LookupError("frame does not exist")
        t = seconds(when) or self.now
        half = math.sqrt(0.5)     # map <- lidar: yaw +90 deg, then the sensor's position
        map_from_lidar = Transform(translation=Vector3(x=t, y=0.0, z=0.0),
                                   rotation=Quaternion(x=0.0, y=0.0, z=half, w=half))
        if (target, source) == ("map", "lidar"):
            return TransformStamped(transform=map_from_lidar)
        if (target, source) == ("lidar", "map"):
            inverse = np.linalg.inv(transform_matrix(map_from_lidar))
            return TransformStamped(transform=Transform(translation=Vector3(
                x=inverse[0, 3], y=inverse[1, 3], z=inverse[2, 3]), rotation=Quaternion(
                x=0.0, y=0.0, z=-half, w=half)))
        raise LookupError(f"no path {source} -> {target}")


@pytest.fixture
def tf2(monkeypatch):
    """tf2_ros replaced by a module holding a MovingSensorBuffer (a listener that records)."""
    made = {}

    class TransformListener:
        def __init__(self, buffer, node, spin_thread):
            made.update(node=node, spin_thread=spin_thread)

    def buffer():
        made["buffer"] = MovingSensorBuffer(now=109.0)
        return made["buffer"]

    monkeypatch.setitem(sys.modules, "tf2_ros", types.SimpleNamespace(
        Buffer=buffer, TransformListener=TransformListener))
    return made


def test_transform_matrix_of_a_quaternion_and_translation():
    half = math.sqrt(0.5)
    matrix = transform_matrix(Transform(translation=Vector3(x=1.0, y=2.0, z=3.0),
                                        rotation=Quaternion(z=half, w=half)))
    np.testing.assert_allclose(matrix @ [1.0, 0.0, 0.0, 1.0], [1.0, 3.0, 3.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="zero quaternion"):
        transform_matrix(Transform(rotation=Quaternion(w=0.0)))


def test_same_or_empty_frame_is_used_directly():
    transformer = ClickTransformer(node=None)
    assert transformer.to_frame(click("lidar"), "lidar", 0.1) == (1.0, 2.0, 3.0)
    assert transformer.to_frame(click(""), "lidar", 0.1) == (1.0, 2.0, 3.0)


def test_no_cloud_frame_yet_leaves_the_click_as_it_is(monkeypatch):
    # before the first cloud there is nothing to transform into (the worker rejects the click
    # with "no cloud yet"), and tf2 is not even asked
    monkeypatch.setitem(sys.modules, "tf2_ros", None)
    assert ClickTransformer(node=None).to_frame(click("map", 4.0), None, 0.1) == (4.0, 2.0, 3.0)


def test_other_frame_without_tf2_is_rejected_with_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # makes `import tf2_ros` fail
    transformer = ClickTransformer(node=None)
    with pytest.raises(ClickRejectedError, match="tf2 is missing"):
        transformer.to_frame(click("map"), "lidar", 0.1, Time(sec=5))
    pose, reason = transformer.pose("odom", "lidar", Time(sec=5), 0.1)
    assert pose is None and "tf2 is missing" in reason
    np.testing.assert_array_equal(transformer.pose("odom", "odom", Time(sec=5), 0.1)[0],
                                  np.eye(4))


def test_a_click_in_map_made_later_lands_where_the_cloud_was_drawn(tf2):
    # The cloud was taken at t = 100 s; RViz drew it in map with the transform at 100 s. The
    # sensor drives on at 1 m/s and the user clicks at t = 109 s on an object drawn at
    # lidar (5, 0, 0), i.e. map (100, 5, 0). At the cloud's stamp the click lands on it; with
    # the latest transform (t = 109 s) it would land 9 m off.
    cloud_stamp = Time(sec=100)
    xyz = np.array([[5.0, 0.0, 0.0], [-4.0, 0.0, 0.0], [0.0, 5.0, 0.0]])   # lidar frame
    transformer = ClickTransformer(node="the node")
    position = transformer.to_frame(click("map", 100.0, 5.0, 0.0), "lidar", 0.2, cloud_stamp)
    nearest = int(np.argmin(np.linalg.norm(xyz - position, axis=1)))
    assert nearest == 0 and np.linalg.norm(xyz[0] - position) < 1e-9
    target, source, when, timeout = tf2["buffer"].calls[-1]
    assert (target, source, when, timeout) == ("lidar", "map", 100.0, 0.2)
    assert tf2["node"] == "the node" and tf2["spin_thread"] is False
    # what the latest transform would have given: 9 m off the object
    latest = transformer.to_frame(click("map", 100.0, 5.0, 0.0), "lidar", 0.2, Time())
    assert abs(np.linalg.norm(np.subtract(latest, xyz[0])) - 9.0) < 1e-9


def test_a_missing_transform_is_rejected_with_the_frames_and_stamp(tf2):
    transformer = ClickTransformer(node=None)
    with pytest.raises(ClickRejectedError, match=r"from 'unknown' to 'lidar' at the cloud's "
                                                 r"stamp \(7\.000000005 s\) within 0\.2 s"):
        transformer.to_frame(click("unknown"), "lidar", 0.2, Time(sec=7, nanosec=5))


def test_sweep_pose_in_the_fixed_frame(tf2):
    transformer = ClickTransformer(node=None)
    pose, reason = transformer.pose("map", "lidar", Time(sec=3), 0.05)
    assert reason == "" and pose is not None
    np.testing.assert_allclose(pose @ [1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 0.0, 1.0], atol=1e-12)
    pose, reason = transformer.pose("unknown", "lidar", Time(sec=3), 0.05)
    assert pose is None and "no transform from 'lidar' to 'unknown' at 3.000000000 s" in reason

"""Click frames: same frame passes through, other frames go through tf2 when it is importable
(here a stand-in, tf2 has no PyPI wheel) and are rejected with a reason when it is not."""
from __future__ import annotations

import sys
import types

import pytest

try:
    from geometry_msgs.msg import Point, PointStamped
    from std_msgs.msg import Header

    from npiseg_ros.ros.frames import ClickTransformer
except ImportError:  # pragma: no cover
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.core.errors import ClickRejectedError  # noqa: E402


def click(frame: str, x: float = 1.0) -> PointStamped:
    return PointStamped(header=Header(frame_id=frame), point=Point(x=x, y=2.0, z=3.0))


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
    with pytest.raises(ClickRejectedError, match="tf2 is not available"):
        ClickTransformer(node=None).to_frame(click("map"), "lidar", 0.1)


def test_other_frame_goes_through_tf2(monkeypatch):
    calls = {}

    class Buffer:
        def transform(self, stamped, target, timeout):
            calls.update(source=stamped.header.frame_id, target=target, timeout=timeout)
            if stamped.header.frame_id == "unknown":
                raise LookupError("frame does not exist")
            moved = PointStamped(point=Point(x=stamped.point.x + 10.0, y=2.0, z=3.0))
            moved.header.frame_id = target
            return moved

    class TransformListener:
        def __init__(self, buffer, node, spin_thread):
            calls.update(node=node, spin_thread=spin_thread)

    monkeypatch.setitem(sys.modules, "tf2_ros", types.SimpleNamespace(
        Buffer=Buffer, TransformListener=TransformListener))
    monkeypatch.setitem(sys.modules, "tf2_geometry_msgs", types.ModuleType("tf2_geometry_msgs"))
    transformer = ClickTransformer(node="the node")
    assert transformer.to_frame(click("map"), "lidar", 0.2) == (11.0, 2.0, 3.0)
    assert calls["source"] == "map" and calls["target"] == "lidar"
    assert calls["timeout"].nanoseconds == 200_000_000
    assert calls["node"] == "the node" and calls["spin_thread"] is False
    with pytest.raises(ClickRejectedError, match="cannot transform click from 'unknown'"):
        transformer.to_frame(click("unknown"), "lidar", 0.2)

"""The segmentation node in its own process, driven over real DDS by an rclpy client.

Every wait is on a condition (matched subscriptions, ready services, a state satisfying a
predicate); the timeouts only turn a hang into a failure and say nothing about speed.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

try:
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.ros import conversions  # noqa: E402
from npiseg_ros.io.autosave import cloud_fingerprint  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node, street_scene)
from npiseg_ros.srv import SaveAnnotation  # noqa: E402

DOMAIN_ID = domain_for(__name__)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """A node process shared by the tests of this module, and a connected client."""
    tmp = tmp_path_factory.mktemp("node")
    checkpoint = save_tiny_checkpoint(tmp / "tiny.safetensors")
    with ros_test_context(DOMAIN_ID):
        process = start_test_node(tmp, checkpoint, DOMAIN_ID)
        client = SegmentationClient("npiseg_test_client")
        try:
            client.wait_for_node(timeout_s=120)
            xyz, intensity, picks = street_scene()
            client.publish_cloud_until(cloud_msg(xyz, intensity),
                                       lambda s: s.num_points == xyz.shape[0])
            yield process, client, xyz, picks
        finally:
            client.close()
            stop_process(process)
            print((tmp / "node.log").read_text(errors="replace")[-4000:])


def alive(process) -> bool:
    return process.poll() is None


def wait_label(client: SegmentationClient, index: int, expected: int) -> np.ndarray:
    """Labels of the first ~/segmented in which point ``index`` has label ``expected``."""
    return client.wait_for_labels(lambda labels: labels[index] == expected,
                                  what=f"label {expected} at point {index}")


def test_clicks_label_the_clicked_points_and_outputs_agree(node):
    process, client, xyz, picks = node
    client.call("reset")
    client.click(tuple(xyz[picks["a"]]), object_id=1, frame_id=FRAME)
    client.wait_for_state(lambda s: s.num_clicks == 1, what="one click")
    wait_label(client, picks["a"], 1)
    # An RViz click (PointStamped, unlabelled) takes the active object; background click.
    assert client.set_parameter("active_object", 2).successful
    client.rviz_click(tuple(xyz[picks["b"]]), FRAME)
    client.click(tuple(xyz[10]), background=True, frame_id=FRAME)
    state = client.wait_for_state(lambda s: s.num_clicks == 3, what="three clicks")
    labels = client.wait_for_labels(lambda lab: lab[picks["b"]] == 2 and lab[10] == 0,
                                    what="labels of the RViz and background clicks")

    segmented = client.latest["segmented"]
    layout = [(f.name, f.datatype) for f in segmented.fields]
    assert layout == [("x", PointField.FLOAT32), ("y", PointField.FLOAT32),
                      ("z", PointField.FLOAT32), ("label", PointField.UINT32),
                      ("uncertainty", PointField.FLOAT32), ("rgb", PointField.FLOAT32)]
    assert segmented.width * segmented.height == xyz.shape[0]
    assert segmented.header.frame_id == FRAME
    assert list(state.object_ids) == [1, 2]
    for stats in state.objects:
        assert stats.num_points == int(np.sum(labels[np.isfinite(xyz[:, 0])] == stats.object_id))
    assert sum(s.num_clicks for s in state.objects) == 3
    assert state.num_dropped == 10 and state.header.frame_id == FRAME

    uncertainty = conversions.cloud_to_arrays(
        client.spin_until(lambda: client.latest.get("uncertainty"), what="~/uncertainty"))
    assert uncertainty.num_points == xyz.shape[0] and uncertainty.intensity is not None
    assert np.isnan(uncertainty.intensity[-1]) and np.isfinite(uncertainty.intensity[:-10]).all()

    def three_click_markers():
        markers = client.latest.get("markers")
        if markers is not None and sum(m.ns == "clicks" for m in markers.markers) == 3:
            return markers
    markers = client.spin_until(three_click_markers, what="three click markers")
    clicks = [m for m in markers.markers if m.ns == "clicks"]
    assert [m.type for m in clicks] == [Marker.SPHERE, Marker.SPHERE, Marker.CUBE]
    assert {m.id for m in markers.markers if m.ns == "objects"} == {1, 2}
    assert state.has_suggestion == any(m.ns == "suggested_click" for m in markers.markers)
    assert alive(process)


def test_undo_new_object_reset_and_save(node, tmp_path):
    process, client, xyz, picks = node
    client.call("reset")
    client.wait_for_state(lambda s: s.num_clicks == 0, what="reset")
    client.click(tuple(xyz[picks["a"]]), object_id=1, frame_id=FRAME)
    client.click(tuple(xyz[picks["b"]]), object_id=3, frame_id=FRAME)
    client.wait_for_state(lambda s: s.num_clicks == 2, what="two clicks")

    response = client.call("new_object")
    assert response.success and response.object_id == 4
    client.wait_for_state(lambda s: s.active_object == 4, what="active object 4")

    undo = client.call("undo")
    assert undo.success and "object 3" in undo.message
    state = client.wait_for_state(lambda s: s.num_clicks == 1, what="undo")
    assert list(state.object_ids) == [1]

    # Relative names are written under the node's output_directory (test_ros_write_safety.py
    # covers the paths it refuses).
    written = {}
    for fmt, name in (("npz", "a.npz"), ("ply", "a.ply"), ("label", "a.label"), ("", "b.npz")):
        request = SaveAnnotation.Request(path=f"saves/{name}", format=fmt)
        response = client.call("save_annotation", request)
        assert response.success, response.message
        written[name] = Path(response.path)
        assert written[name].is_file() and written[name].parent.name == "saves"
    with np.load(written["a.npz"]) as saved:
        assert saved["labels"].shape == (xyz.shape[0],) and saved["labels"][picks["a"]] == 1
        assert saved["clicks"].shape == (1, 5)
    raw = np.fromfile(written["a.label"], dtype="<u4")
    assert raw.shape == (xyz.shape[0],) and raw[picks["a"]] & 0xFFFF == 1
    assert written["a.ply"].read_bytes().startswith(b"ply\nformat binary_little_endian")
    bad = client.call("save_annotation", SaveAnnotation.Request(path="x.txt"))
    assert not bad.success and "unknown annotation format" in bad.message

    client.call("reset")
    state = client.wait_for_state(lambda s: s.num_clicks == 0, what="reset")
    assert list(state.object_ids) == [] and not client.call("undo").success
    assert alive(process)


def test_parameters_change_at_run_time_and_bad_values_are_rejected(node):
    process, client, xyz, picks = node
    assert client.set_parameter("num_samples", 3).successful
    assert client.set_parameter("max_click_distance", 0.25).successful
    rejected = {
        ("cloud_policy", "sometimes"): "cloud_policy must be one of",
        ("num_samples", 0): "",           # descriptor range, reason written by rclpy
        ("active_object", 70000): "",
        ("checkpoint", "other.safetensors"): "read-only",
        ("device", "tpu"): "",
    }
    for (name, value), reason in rejected.items():
        result = client.set_parameter(name, value)
        assert not result.successful, name
        assert reason.lower() in result.reason.lower(), result.reason
    assert client.set_parameter("max_click_distance", 0.5).successful
    assert alive(process)


def _bad_cloud(case: str, xyz: np.ndarray, intensity: np.ndarray) -> PointCloud2:
    msg = cloud_msg(xyz, intensity)
    if case == "no xyz":
        msg.fields = [f for f in msg.fields if f.name != "z"]
    elif case == "wrong point_step":
        msg.point_step = 8
        msg.row_step = 8 * msg.width
    elif case == "truncated":
        msg.data = bytes(msg.data)[: len(msg.data) // 2]
    elif case == "all NaN":
        msg = cloud_msg(np.full_like(xyz, np.nan), intensity)
    elif case == "empty":
        msg = cloud_msg(xyz[:0], intensity[:0])
    elif case == "over max_points":
        msg = cloud_msg(np.tile(xyz, (3, 1)), np.tile(intensity, 3))
    return msg


@pytest.mark.parametrize("case, reason", [
    ("no xyz", "no z field"),
    ("wrong point_step", "wrong point_step"),
    ("truncated", "truncated"),
    ("all NaN", "non-finite"),
    ("empty", "empty"),
    ("over max_points", "max_points"),
])
def test_bad_clouds_are_reported_and_the_node_keeps_running(node, case, reason):
    process, client, xyz, _ = node
    _, intensity, _ = street_scene()
    before = client.wait_for_state(lambda s: True)
    if case == "over max_points":
        assert client.set_parameter("max_points", xyz.shape[0] * 2).successful
    try:
        client.publish_cloud(_bad_cloud(case, xyz, intensity))
        message = client.wait_for_error(before.error_count)
    finally:
        if case == "over max_points":
            client.set_parameter("max_points", 2_000_000)
    assert "cloud rejected" in message and reason in message, message
    assert alive(process)
    # Still serving: the annotated cloud is untouched and services answer.
    assert client.wait_for_state(lambda s: True).num_points == xyz.shape[0]
    assert client.call("new_object").success


def test_organised_big_endian_rgb_cloud_in_follow_mode(node):
    """An organised (2 rows), big-endian cloud with a padded point and packed rgb: decoded like
    the little-endian one, and ~/segmented keeps its rows and point order."""
    process, client, xyz, picks = node
    _, intensity, _ = street_scene()
    moved = xyz + np.float32(0.5)  # different points, so the node really switches clouds
    names = ("x", "y", "z", "intensity", "rgb")
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32 if n != "rgb"
                         else PointField.UINT32, count=1) for i, n in enumerate(names)]
    data = b"".join(struct.pack(">4fI4x", *p, i, 0x00FF8000)
                    for p, i in zip(moved.tolist(), intensity.tolist()))
    width = xyz.shape[0] // 2
    msg = PointCloud2(header=Header(frame_id=FRAME), height=2, width=width, fields=fields,
                      is_bigendian=True, point_step=24, row_step=24 * width, data=data)
    assert client.set_parameter("cloud_policy", "follow").successful
    try:
        client.publish_cloud(msg)
        state = client.wait_for_state(
            lambda s: s.cloud_fingerprint == cloud_fingerprint(moved), what="big-endian cloud")
        assert state.num_points == xyz.shape[0] and state.num_dropped == 10
        client.click(tuple(moved[picks["a"]]), object_id=5, frame_id=FRAME)
        wait_label(client, picks["a"], 5)
        segmented = client.latest["segmented"]
        assert (segmented.height, segmented.width) == (2, width)
        np.testing.assert_array_equal(conversions.cloud_to_arrays(segmented).xyz, moved)
    finally:  # back to the module's cloud for the other tests
        client.call("reset")
        client.publish_cloud_until(cloud_msg(xyz, intensity),
                                   lambda s: s.cloud_fingerprint == cloud_fingerprint(xyz))
        client.set_parameter("cloud_policy", "latch")
    assert alive(process)


@pytest.mark.parametrize("case, reason", [
    ("far from all points", "from the nearest point"),
    ("unknown frame", "tf2"),
    ("object id 0 without background", "not an object id"),
    ("object id too large", "not an object id"),
    ("point index out of range", "outside"),
])
def test_bad_clicks_are_reported_and_the_node_keeps_running(node, case, reason):
    process, client, xyz, picks = node
    before = client.wait_for_state(lambda s: True)
    point = tuple(xyz[picks["a"]])
    if case == "far from all points":
        client.click((100.0, 100.0, 100.0), object_id=1, frame_id=FRAME)
    elif case == "unknown frame":
        client.rviz_click(point, "map")
    elif case == "object id 0 without background":
        client.click(point, object_id=0, frame_id=FRAME)
    elif case == "object id too large":
        client.click(point, object_id=70000, frame_id=FRAME)
    elif case == "point index out of range":
        client.click(object_id=1, point_index=xyz.shape[0] + 5)
    message = client.wait_for_error(before.error_count)
    assert reason in message, message
    assert client.wait_for_state(lambda s: True).num_clicks == before.num_clicks
    assert alive(process)

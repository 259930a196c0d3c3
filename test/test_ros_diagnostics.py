"""``/diagnostics`` and the node's topic names.

The health rules (levels, messages, measured values) are checked on :class:`NodeHealth` with
chosen times; then the real node process in a namespace, over DDS: every topic of the node moves
into the namespace (before: ``/points`` and ``/clicked_point`` were absolute and stayed put),
``/diagnostics`` is published there with the model, rate, decode time and a level.
"""
from __future__ import annotations

import signal

import pytest
import yaml

try:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from geometry_msgs.msg import Point, PointStamped
    from std_msgs.msg import Header
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy / diagnostic_msgs not installed (run scripts/setup.sh)",
                allow_module_level=True)

from npiseg_ros.annotation.stream import StreamStats  # noqa: E402
from npiseg_ros.ros import diagnostics  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.diagnostics import ERROR, OK, WARN, NodeHealth, model_name  # noqa: E402
from npiseg_ros.ros.processes import ros_environment, start_module, stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, street_scene)

DOMAIN_ID = domain_for(__name__)


def _report(health: NodeHealth, now_s: float, **overrides):
    arguments = {"model": "npiseg_prior_10cm", "role": "default", "cloud_policy": "latch",
                 "queue_depth": 0, "encode_ms": 310.0, "stream": None}
    return health.report(now_s, **{**arguments, **overrides})


def test_measures_rate_and_decode_times_and_says_ok():
    health = NodeHealth("/points")
    for number in range(11):  # 10 Hz for one second
        health.cloud_received(100.0 + 0.1 * number)
    for decode_ms in (10.0, 30.0, 20.0):
        health.decoded(decode_ms)
    report = _report(health, 101.0, queue_depth=3)
    values = dict(report.values)
    assert report.level == OK, report.message
    assert values["cloud rate (Hz)"] == "10.00"
    assert values["decode time last (ms)"] == "20.0"
    assert values["decode time median (ms)"] == "20.0"
    assert values["encode time last (ms)"] == "310.0"
    assert values["queue depth (clicks waiting)"] == "3"
    assert values["model"] == "npiseg_prior_10cm" and values["model role"] == "default"
    assert values["clouds received"] == "11" and values["clouds rejected"] == "0"


def test_rate_counts_only_the_window():
    health = NodeHealth("/points", window_s=10.0)
    for seconds in (0.0, 1.0, 2.0):  # 1 Hz, long ago
        health.cloud_received(seconds)
    for seconds in (50.0, 50.5, 51.0):  # 2 Hz now
        health.cloud_received(seconds)
    assert health.cloud_rate_hz(51.0) == pytest.approx(2.0)
    assert health.cloud_rate_hz(70.0) == 0.0  # nothing in the last 10 s


def test_warns_while_no_cloud_came():
    report = _report(NodeHealth("/lidar/points"), 5.0, role="", encode_ms=None)
    assert report.level == WARN and "waiting for a cloud on /lidar/points" in report.message
    assert dict(report.values)["decode time median (ms)"] == "none yet"


def test_error_when_every_recent_cloud_was_rejected_then_ok_again():
    health = NodeHealth("/points", window_s=10.0)
    for seconds in (0.0, 1.0, 2.0):
        health.cloud_received(seconds)
        health.cloud_rejected(seconds, "the cloud has no z field")
    report = _report(health, 3.0)
    assert report.level == ERROR
    assert "every cloud of the last 10 s was rejected: the cloud has no z field" in report.message
    assert dict(report.values)["clouds rejected"] == "3"
    health.cloud_received(20.0)  # a good one, later: the bad ones left the window
    assert _report(health, 20.5).level == OK


def test_follow_warns_on_a_stale_stream_and_on_dropped_sweeps():
    health = NodeHealth("/points", window_s=10.0)
    health.cloud_received(0.0)
    stale = _report(health, 6.0, cloud_policy="follow", stream=StreamStats(received=1))
    assert stale.level == WARN and "no sweep on /points for more than 5 s" in stale.message
    # latch: one cloud, annotated for minutes, is not stale
    assert _report(health, 6.0).level == OK
    _report(health, 9.0, cloud_policy="follow", stream=StreamStats(received=1))
    for number in range(21):
        health.cloud_received(10.0 + 0.1 * number)
    dropping = _report(health, 12.0, cloud_policy="follow",
                       stream=StreamStats(received=21, answered=5, dropped=16))
    assert dropping.level == WARN
    assert "16 of 20 sweeps of the last 10 s dropped" in dropping.message
    assert dict(dropping.values)["sweeps dropped"] == "16"
    keeping_up = _report(health, 12.0, cloud_policy="follow",
                         stream=StreamStats(received=21, answered=19, dropped=2))
    assert keeping_up.level == OK, keeping_up.message


def test_warns_when_clicks_pile_up():
    health = NodeHealth("/points")
    health.cloud_received(0.0)
    report = _report(health, 1.0, queue_depth=diagnostics.QUEUE_WARN)
    assert report.level == WARN and "clicks waiting for the decoder" in report.message


def test_model_name_follows_the_role():
    checkpoints = {"default": "/m/npiseg_prior_10cm.safetensors",
                   "rgb": "/m/npiseg_prior.safetensors"}
    assert model_name(checkpoints, "rgb") == "npiseg_prior"
    assert model_name(checkpoints, "") == "npiseg_prior_10cm"
    assert model_name({}, "default") == "untrained"


def test_message_carries_level_and_values():
    health = NodeHealth("/points")
    report = _report(health, 1.0)
    array = diagnostics.diagnostic_array(report, "/npiseg: segmentation", "cpu",
                                         stamp=Header().stamp)
    (status,) = array.status
    assert status.level == DiagnosticStatus.WARN and status.hardware_id == "cpu"
    assert status.name == "/npiseg: segmentation" and status.message == report.message
    assert [(kv.key, kv.value) for kv in status.values] == list(report.values)


# ------------------------------------------------------------------ the real node, namespaced
def _statuses(store: list):
    return lambda msg: store.extend(s for s in msg.status if s.name.startswith("/lidar/npiseg"))


def test_namespaced_node_moves_every_topic_and_publishes_diagnostics(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    values = {"checkpoint": str(checkpoint), "device": "cpu", "num_samples": 2,
              "output_directory": str(tmp_path), "autosave_directory": str(tmp_path / "a")}
    params = tmp_path / "node.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    env = ros_environment(DOMAIN_ID)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    xyz, intensity, picks = street_scene(seed=5)
    statuses: list = []
    with ros_test_context(DOMAIN_ID):
        process = start_module("npiseg_ros.ros.node", [
            "--ros-args", "--params-file", str(params), "-r", "__ns:=/lidar"],
            env, tmp_path / "node.log")
        client = SegmentationClient("npiseg_ns_client", node_name="/lidar/npiseg",
                                    cloud_topic="/lidar/points")
        try:
            client.node.create_subscription(DiagnosticArray, "/diagnostics",
                                            _statuses(statuses), 10)
            rviz = client.node.create_publisher(PointStamped, "/lidar/clicked_point", 10)
            client.spin_until(lambda: statuses, 120, "a /diagnostics status from the node")
            assert statuses[0].name == "/lidar/npiseg: segmentation"
            assert statuses[0].level == DiagnosticStatus.WARN
            assert "waiting for a cloud on /lidar/points" in statuses[0].message
            assert dict((kv.key, kv.value) for kv in statuses[0].values)["model"] == "tiny"
            # every input topic of the node is in the namespace
            def subscribed() -> set[str]:
                return {name for name, _ in
                        client.node.get_subscriber_names_and_types_by_node("npiseg", "/lidar")}
            inputs = {"/lidar/points", "/lidar/clicked_point", "/lidar/npiseg/click"}
            client.spin_until(lambda: inputs <= subscribed(), 60, "the node's subscriptions")
            assert not {"/points", "/clicked_point"} & subscribed()
            client.publish_cloud_until(cloud_msg(xyz, intensity),
                                       lambda s: s.num_points == xyz.shape[0])
            point = xyz[picks["a"]]
            click = PointStamped(header=Header(frame_id=FRAME), point=Point(
                x=float(point[0]), y=float(point[1]), z=float(point[2])))
            for attempt in range(30):  # until both sides have matched: then it arrives
                rviz.publish(click)
                try:
                    client.wait_for_state(lambda s: s.num_clicks >= 1, 2.0, "the RViz click")
                    break
                except TimeoutError:
                    assert attempt < 29, "the click on /lidar/clicked_point never arrived"

            def decoded():
                last = dict((kv.key, kv.value) for kv in statuses[-1].values)
                return last["decode time last (ms)"] != "none yet" and statuses[-1]
            status = client.spin_until(decoded, 60, "diagnostics after the decode")
            values = dict((kv.key, kv.value) for kv in status.values)
            assert status.level == DiagnosticStatus.OK, status.message
            assert values["cloud topic"] == "/lidar/points" and values["model role"] == "default"
            assert float(values["decode time median (ms)"]) > 0
            assert int(values["clouds received"]) >= 1
        finally:
            client.close()
            process.send_signal(signal.SIGINT)
            code = process.wait(120)
            stop_process(process)
    log = (tmp_path / "node.log").read_text(errors="replace")
    print(log[-3000:])
    assert code == 0 and "Traceback" not in log

"""The default cloud subscription receives from a sensor driver (best effort, the
sensor-data QoS profile) AND from a reliable publisher, over real DDS.

Before: the subscription was reliable by default, which is incompatible with a best-effort
publisher (DDS matches nothing; rclpy only warns), so `cloud_topic:=/velodyne_points` on a real
driver received nothing.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

try:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.ros import params  # noqa: E402
from npiseg_ros.io.autosave import cloud_fingerprint  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node, street_scene)

DOMAIN_ID = domain_for(__name__)


def publish_until(client: SegmentationClient, publisher, msg, predicate, timeout_s=120.0):
    """Publish ``msg`` on ``publisher`` until the node's state satisfies ``predicate`` (best
    effort may drop a message; re-sending the same points is harmless)."""
    deadline = time.monotonic() + timeout_s
    while True:
        publisher.publish(msg)
        try:
            return client.wait_for_state(predicate, 2.0, "the cloud to be taken")
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def test_default_qos_receives_best_effort_and_reliable_publishers(tmp_path):
    assert {s.name: s.default for s in params.PARAMETERS}["qos_reliability"] == "best_effort"
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    xyz, intensity, picks = street_scene(seed=4)
    moved = xyz + np.float32(1.0)
    with ros_test_context(DOMAIN_ID):
        # qos_reliability not given: the node's default. follow: take every new cloud.
        process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, cloud_policy="follow")
        client = SegmentationClient("npiseg_qos_client")
        sensor = client.node.create_publisher(PointCloud2, "/points", qos_profile_sensor_data)
        try:
            client.wait_for_node(timeout_s=120)
            client.spin_until(lambda: sensor.get_subscription_count() > 0, 60,
                              "the node to match the best-effort publisher")
            # A LiDAR driver: best effort, volatile, depth 5.
            state = publish_until(client, sensor, cloud_msg(xyz, intensity),
                                  lambda s: s.cloud_fingerprint == cloud_fingerprint(xyz))
            assert state.num_points == xyz.shape[0]
            client.click(tuple(xyz[picks["a"]]), object_id=1, frame_id=FRAME)
            client.wait_for_labels(lambda labels: labels[picks["a"]] == 1, what="labels")
            # A reliable (and transient-local) publisher: the client's own.
            assert client.cloud_pub.qos_profile.reliability.name == "RELIABLE"
            state = publish_until(client, client.cloud_pub, cloud_msg(moved, intensity),
                                  lambda s: s.cloud_fingerprint == cloud_fingerprint(moved))
            assert state.num_points == xyz.shape[0] and state.error_count == 0
        finally:
            client.close()
            stop_process(process)
            print((tmp_path / "node.log").read_text(errors="replace")[-2000:])

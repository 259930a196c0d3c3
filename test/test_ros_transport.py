"""A LiDAR-sized cloud (120k points, ~2 MB) reaches a best-effort subscription of the node when
both processes load the shipped shared-memory Fast DDS profile (default Fast DDS loses most such
clouds on best effort; see ../shared/reference/ros2-here.md)."""
from __future__ import annotations

import numpy as np
import pytest

try:
    import rclpy  # noqa: F401 (only to skip without ROS)
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import FASTDDS_PROFILE, stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node)

DOMAIN_ID = domain_for(__name__)


def test_large_cloud_reaches_a_best_effort_subscription(tmp_path):
    assert FASTDDS_PROFILE.is_file()
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    rng = np.random.default_rng(3)
    n = 120_000
    xyz = np.c_[rng.uniform(-40, 40, (n, 2)), rng.uniform(-2, 4, n)].astype(np.float32)
    intensity = rng.uniform(0, 1, n).astype(np.float32)
    message = cloud_msg(xyz, intensity)
    assert len(message.data) > 1_900_000
    with ros_test_context(DOMAIN_ID):
        process = start_test_node(tmp_path, checkpoint, DOMAIN_ID,
                                  qos_reliability="best_effort", qos_depth=1)
        client = SegmentationClient("npiseg_transport_client")
        try:
            client.wait_for_node(timeout_s=120)
            state = client.publish_cloud_until(message, lambda s: s.num_points == n,
                                               retry_s=10.0)
            assert state.num_points == n and state.error_count == 0
            client.click(tuple(xyz[123]), object_id=1, frame_id=FRAME)
            labels = client.wait_for_labels(lambda lab: lab[123] == 1)
            assert labels.shape == (n,)
        finally:
            client.close()
            stop_process(process)
            print((tmp_path / "node.log").read_text(errors="replace")[-2000:])

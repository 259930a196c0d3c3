"""Crash safety: SIGKILL the node after some clicks, restart it, get the same annotation back.

The node runs in its own process over real DDS (own ROS domain for this module).
"""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

try:
    import rclpy  # noqa: F401 (only to skip without ROS)
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.io.autosave import load_autosave  # noqa: E402
from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.processes import stop_process  # noqa: E402
from npiseg_ros.ros.testing import (FRAME, cloud_msg, domain_for, ros_test_context,  # noqa: E402
                                    save_tiny_checkpoint, start_test_node, street_scene)

DOMAIN_ID = domain_for(__name__)


def test_sigkill_after_clicks_then_restart_recovers_the_annotation(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    xyz, intensity, picks = street_scene(seed=1)
    with ros_test_context(DOMAIN_ID):
        process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, "first")
        client = SegmentationClient("npiseg_resume_client")
        try:
            client.wait_for_node(timeout_s=120)
            # A click before any cloud is rejected with a reason, and the node carries on.
            client.click((0.0, 0.0, 0.0), object_id=1, frame_id=FRAME)
            assert "no cloud yet" in client.wait_for_error(0)

            client.publish_cloud_until(cloud_msg(xyz, intensity),
                                       lambda s: s.num_points == xyz.shape[0])
            client.click(tuple(xyz[picks["a"]]), object_id=1, frame_id=FRAME)
            client.wait_for_state(lambda s: s.num_clicks == 1, what="first click")
            # Two clicks in a row: the node may decode them together; the resume must replay
            # the same decode sequence to give identical labels. The active object (the RViz
            # click's) is saved with them and comes back as the parameter.
            assert client.set_parameter("active_object", 2).successful
            client.rviz_click(tuple(xyz[picks["b"]]), FRAME)
            client.click(tuple(xyz[5]), background=True, frame_id=FRAME)
            before = client.wait_for_state(lambda s: s.num_clicks == 3, what="three clicks")
            labels = client.wait_for_labels(lambda lab: lab[picks["b"]] == 2 and lab[5] == 0)

            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
            saved = load_autosave(tmp_path / "autosave", before.cloud_fingerprint)
            assert saved is not None and len(saved.clicks) == 3

            client.latest.clear()
            process = start_test_node(tmp_path, checkpoint, DOMAIN_ID, "second")
            # The user publishes the same scan again; the node finds its autosave and resumes.
            after = client.publish_cloud_until(cloud_msg(xyz, intensity),
                                               lambda s: s.num_clicks == 3)
            assert after.cloud_fingerprint == before.cloud_fingerprint
            assert list(after.object_ids) == [1, 2] and after.active_object == 2
            resumed = client.wait_for_labels(lambda lab: lab[picks["b"]] == 2, what="labels")
            np.testing.assert_array_equal(resumed, labels)
            # The resumed annotation continues normally.
            assert client.call("undo").success
            client.wait_for_state(lambda s: s.num_clicks == 2, what="undo after resume")
        finally:
            client.close()
            stop_process(process)
            for name in ("first", "second"):
                log = tmp_path / f"{name}.log"
                if log.exists():
                    print(f"--- {name} node log ---\n" + log.read_text(errors="replace")[-3000:])

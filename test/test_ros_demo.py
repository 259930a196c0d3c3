"""The README's main job: the demo (node + scripted user, two processes over real DDS).

Runs on the project's synthetic scene with a tiny checkpoint to stay quick; the default run on
the SemanticKITTI scan uses the same code path.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

try:
    import rclpy  # noqa: F401 (only to skip without ROS)
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.ros.processes import ros_environment  # noqa: E402
from npiseg_ros.ros.testing import domain_for, save_tiny_checkpoint  # noqa: E402


def test_demo_clicks_objects_and_writes_pngs_and_annotation(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "demo"
    env = ros_environment(domain_for(__name__))
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "npiseg_ros.ros.demo", "--synthetic", "--objects", "2",
         "--clicks", "3", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu",
         "--domain-id", str(domain_for(__name__))],
        env=env, capture_output=True, text=True, timeout=600)
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0
    assert "[user] click  3" in result.stdout and "mIoU" in result.stdout
    summary = json.loads((out / "demo_summary.json").read_text())
    assert [click["click"] for click in summary["clicks"]] == [1, 2, 3]
    assert all(click["latency_ms"] > 0 and len(click["ious"]) == 2 for click in summary["clicks"])
    # the labels are published before the autosave, the state after it
    assert all(click["state_latency_ms"] >= click["latency_ms"] for click in summary["clicks"])
    assert {p.name for p in out.glob("click_*.png")} == {"click_01.png", "click_02.png",
                                                         "click_03.png"}
    for name in ("annotation.npz", "annotation.ply", "annotation.label"):
        assert (out / name).stat().st_size > 0

"""What a ROS 2 user gets from `colcon build`: a real colcon workspace build of this package
(plain and --symlink-install) against the ROS 2 PyPI wheels, its install tree, and the node
run from it (shipped model, the bundled sweep published best effort, Ctrl-C).

The slowest test of the suite (two CMake builds of the interfaces, ~1-2 min each on 2 cores);
it needs cmake, g++ and colcon in the venv (scripts/setup.sh installs them).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

from npiseg_ros.ros.client import SegmentationClient  # noqa: E402
from npiseg_ros.ros.demo_user import DEFAULT_SCAN  # noqa: E402
from npiseg_ros.ros.processes import ros_environment, stop_process  # noqa: E402
from npiseg_ros.ros.testing import (cloud_msg, domain_for, ros_test_context,  # noqa: E402
                                    street_scene)

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DOMAIN_ID = domain_for(__name__)
# What a clone in <ws>/src holds that the build uses.
PACKAGE_FILES = ("CMakeLists.txt", "package.xml", "msg", "srv", "npiseg_ros", "launch", "config",
                 "checkpoints", "resource", "bin")
EXECUTABLES = ("segment_node", "segment_demo", "segment_demo_user")

pytestmark = pytest.mark.skipif(
    not (VENV_BIN / "colcon").exists() or shutil.which("cmake") is None
    or shutil.which("g++") is None, reason="needs colcon in the venv, cmake and g++ "
    "(scripts/setup.sh)")


def _workspace(root: Path) -> Path:
    """<root>/src/npiseg_ros: a copy of the package as a clone would have it."""
    package = root / "src" / "npiseg_ros"
    package.mkdir(parents=True)
    for name in PACKAGE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, package / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, package / name)
    return root


def _build(workspace: Path, *arguments: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "colcon_build_wheels.sh"), str(workspace), *arguments],
        capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]


def _sourced(workspace: Path, command: str) -> list[str]:
    """bash: source the workspace's setup.bash, then ``command`` (a ROS user's terminal)."""
    return ["bash", "-c", f"source {workspace}/install/setup.bash && {command}"]


def _user_environment(domain_id: int) -> dict[str, str]:
    env = ros_environment(domain_id)
    env.pop("PYTHONPATH")  # only what setup.bash sets: the code must come from the install
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"  # python3 = the venv with the wheels
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _check_install_tree(workspace: Path) -> None:
    prefix = workspace / "install" / "npiseg_ros"
    for name in EXECUTABLES:
        executable = prefix / "lib" / "npiseg_ros" / name
        assert executable.exists() and os.access(executable, os.X_OK), f"{executable} mode " \
            f"{oct(executable.resolve().stat().st_mode)}: not executable"
    share = prefix / "share" / "npiseg_ros"
    for name in ("launch/segment.launch.py", "config/segment.yaml", "config/fastdds_shm.xml",
                 "config/npiseg.rviz", "package.xml"):
        assert (share / name).is_file(), name
    shipped = sorted(p.name for p in (ROOT / "checkpoints").glob("*.safetensors"))
    assert shipped and sorted(p.name for p in (share / "checkpoints").glob("*.safetensors")) \
        == shipped


def _sweep() -> tuple[np.ndarray, np.ndarray]:
    """The SemanticKITTI scan beside the repository (the demo's), else a synthetic street."""
    if DEFAULT_SCAN.is_file():
        scan = np.fromfile(DEFAULT_SCAN, dtype=np.float32).reshape(-1, 4)
        return np.ascontiguousarray(scan[:, :3]), np.ascontiguousarray(scan[:, 3])
    xyz, intensity, _ = street_scene()
    return xyz, intensity


def _run_node_from_install(workspace: Path, tmp: Path, xyz, intensity) -> str:
    """Start lib/npiseg_ros/segment_node from the sourced install with the installed params
    file, publish the sweep best effort, click, check the labels, Ctrl-C twice; its log."""
    share = workspace / "install" / "npiseg_ros" / "share" / "npiseg_ros"
    log_path = tmp / f"{workspace.name}-node.log"
    node_command = (f"cd {tmp} && exec {workspace}/install/npiseg_ros/lib/npiseg_ros/segment_node"
                    f" --ros-args --params-file {share}/config/segment.yaml"
                    f" -p device:=cpu -p num_samples:=2 -p output_directory:={tmp}"
                    f" -p autosave_directory:={tmp}/autosave-{workspace.name}")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(_sourced(workspace, node_command),
                                   env=_user_environment(DOMAIN_ID), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    client = SegmentationClient(f"npiseg_colcon_client_{workspace.name}")
    try:
        sensor = client.node.create_publisher(PointCloud2, "/points", qos_profile_sensor_data)
        client.wait_for_node(timeout_s=180)
        message = cloud_msg(xyz, intensity, frame_id="velodyne")
        client.spin_until(lambda: sensor.get_subscription_count() > 0, 60,
                          "the node to match the best-effort publisher")
        for attempt in range(30):  # best effort: re-send until the node has taken the sweep
            sensor.publish(message)
            try:
                client.wait_for_state(lambda s: s.num_points == xyz.shape[0], 10.0)
                break
            except TimeoutError:
                assert attempt < 29, "the node never took the best-effort sweep"
        index = int(np.flatnonzero(np.isfinite(xyz[:, 0]))[len(xyz) // 3])
        client.click(object_id=1, point_index=index)
        labels = client.wait_for_labels(lambda lab: lab[index] == 1, timeout_s=300,
                                        what="the clicked point labelled")
        assert labels.shape == (xyz.shape[0],)
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(120)
    finally:
        client.close()
        stop_process(process)
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text


def test_colcon_build_plain_and_symlink_install_runs_the_shipped_model(tmp_path):
    xyz, intensity = _sweep()
    with ros_test_context(DOMAIN_ID):
        for mode, arguments in (("plain", ()), ("symlink", ("--symlink-install",))):
            workspace = _workspace(tmp_path / mode)
            _build(workspace, *arguments)
            _check_install_tree(workspace)
            # Where `checkpoint: auto` looks, from the sourced workspace (not the checkout).
            probe = subprocess.run(_sourced(workspace, (
                "cd / && python3 -c 'import npiseg_ros, npiseg_ros.msg; "
                "from npiseg_ros.resources import shipped_checkpoint; "
                "print(npiseg_ros.__file__); print(shipped_checkpoint())'")),
                env=_user_environment(DOMAIN_ID), capture_output=True, text=True)
            assert probe.returncode == 0, probe.stderr[-3000:]
            module, checkpoint = probe.stdout.split()[-2:]
            assert module.startswith(str(workspace / "install")), module
            # plain: the installed copy; symlink: the link target in the workspace's source.
            expected = workspace / ("install/npiseg_ros/share/npiseg_ros" if mode == "plain"
                                    else "src/npiseg_ros")
            assert checkpoint.startswith(str(expected / "checkpoints")), checkpoint
            log = _run_node_from_install(workspace, tmp_path, xyz, intensity)
            assert f"model: checkpoint {checkpoint}" in log, log[-3000:]

"""Helpers for tests that run the node in its own process over real DDS.

Each test module gets its own ``ROS_DOMAIN_ID`` (:func:`domain_for`) and uses
:func:`ros_test_context` to initialise rclpy in it; the node is started with a small params file
(:func:`start_test_node`) and a tiny checkpoint (:func:`save_tiny_checkpoint`).
"""
from __future__ import annotations

import contextlib
import os
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import rclpy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from npiseg_ros.ros import conversions
from npiseg_ros.ros.processes import ros_environment, start_module, start_segment_node

__all__ = ["FRAME", "domain_for", "ros_test_context", "save_tiny_checkpoint", "street_scene",
           "cloud_msg", "start_test_node"]

FRAME = "lidar"
_ROS_VARIABLES = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                  "FASTDDS_DEFAULT_PROFILES_FILE")


def domain_for(module_name: str) -> int:
    """A ROS domain id in [1, 100] for this test module and process.

    Differs between modules of one run and, through the pid, between runs that happen at the
    same time on one machine (several developers or CI jobs).
    """
    return 1 + (zlib.crc32(module_name.encode()) + 7 * os.getpid()) % 100


@contextlib.contextmanager
def ros_test_context(domain_id: int) -> Iterator[None]:
    """rclpy initialised in ``domain_id`` with localhost-only discovery; restored after."""
    saved = {key: os.environ.get(key) for key in _ROS_VARIABLES}
    environment = ros_environment(domain_id)
    os.environ.update({key: environment[key] for key in _ROS_VARIABLES if key in environment})
    rclpy.init()
    try:
        yield
    finally:
        rclpy.try_shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def save_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A randomly initialised ``tiny`` intensity model saved as a real checkpoint."""
    import torch

    from npiseg_ros.core.build import build_model, tiny_config
    from npiseg_ros.core.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(path, build_model(tiny_config(input_mode="intensity")))
    return path


def street_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """A small street: ground plane, two boxes and 10 NaN points (N = 2410).

    Returns (xyz (N, 3) float32 metres, intensity (N,) float32 in [0, 1], the index of one
    point inside each box: ``{"a": ..., "b": ...}``).
    """
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-8, 8, (1800, 2)), rng.normal(0, 0.01, 1800)]
    box_a = np.c_[rng.uniform(2, 3, (300, 2)), rng.uniform(0, 1.5, 300)]
    box_b = np.c_[rng.uniform(-4, -3, (300, 1)), rng.uniform(1, 2.5, (300, 1)),
                  rng.uniform(0, 1.0, 300)]
    xyz = np.r_[ground, box_a, box_b, np.full((10, 3), np.nan)].astype(np.float32)
    intensity = rng.uniform(0, 1, xyz.shape[0]).astype(np.float32)
    return xyz, intensity, {"a": 1800 + 150, "b": 2100 + 150}


def cloud_msg(xyz: np.ndarray, intensity: np.ndarray, frame_id: str = FRAME) -> PointCloud2:
    """Unorganised little-endian x, y, z, intensity cloud."""
    return conversions.arrays_to_cloud(Header(frame_id=frame_id), [
        ("x", xyz[:, 0]), ("y", xyz[:, 1]), ("z", xyz[:, 2]), ("intensity", intensity)])


def start_test_node(directory: Path, checkpoint: Path, domain_id: int, name: str = "node",
                    executable: bool = False, **parameters):
    """Start the node process with a small-scale configuration; log in ``directory/name.log``.

    ``python -m npiseg_ros.ros.node``; ``executable``: ``bin/segment_node``, as ``ros2 launch``
    starts it. Extra keyword arguments become parameters (strings are quoted).
    """
    values = {"checkpoint": str(checkpoint), "device": "cpu", "num_samples": 2,
              "output_directory": str(directory),
              "autosave_directory": str(directory / "autosave"), **parameters}
    lines = [f"    {key}: {_yaml_scalar(value)}" for key, value in values.items()]
    params = directory / f"{name}.yaml"
    params.write_text("/**:\n  ros__parameters:\n" + "\n".join(lines) + "\n")
    env = ros_environment(domain_id)
    # Two cores are shared by the test process and the node: keep torch from oversubscribing.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    args, log = ["--ros-args", "--params-file", str(params)], directory / f"{name}.log"
    if executable:
        return start_segment_node(args, env, log)
    return start_module("npiseg_ros.ros.node", args, env, log)


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)

"""A synthetic drive as a rosbag2 bag: street scans from ``npiseg_train.synth`` seen by a sensor
moving forward, with /tf poses (odom <- velodyne).

Each run of ``scene_every`` frames is one generated street; the sensor moves ``speed`` metres
per frame along its x axis, every sweep drops a random share of the points and jitters the rest
(a re-scan, not the same cloud shifted), and a new street starts far away in odom so that
clicks carried into it land on no point. Optional moving objects (``movers``: an instance of
the street driving on its own) test tracking; ``with_labels`` also returns each sweep's
instance ids (the truth). Optional bad frames (empty, all NaN) test the tool's error handling.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from npiseg_ros.annotate.bag import write_cloud_bag

__all__ = ["synthetic_drive", "write_synthetic_bag"]


def synthetic_drive(frames: int = 50, *, scene_every: int = 25, speed: float = 0.4,
                    azimuth_steps: int = 1024, seed: int = 0, keep: float = 0.85,
                    bad_frames: dict[int, str] | None = None,
                    movers: dict[int, tuple[float, float]] | None = None,
                    with_labels: bool = False):
    """Clouds (sensor frame), intensities and poses (odom <- sensor) of a synthetic drive.

    Args:
        movers: instance id of a street -> (x, y) metres per frame it drives on its own (its
            points shifted: no new occlusion is cast, good enough for a tracker's test).
        with_labels: also return each sweep's (N,) int64 instance ids.

    Returns:
        (clouds, intensities, poses) or, ``with_labels``, (clouds, intensities, poses, labels).
    """
    from npiseg_train.synth import generate_lidar_scene  # the training package's generator

    rng = np.random.default_rng(seed)
    clouds, intensities, poses, scenes, truth = [], [], [], {}, []
    for t in range(frames):
        segment, step = divmod(t, max(1, scene_every))
        if segment not in scenes:
            scenes[segment] = generate_lidar_scene(seed + segment, azimuth_steps=azimuth_steps)
        scene = scenes[segment]
        pose = np.eye(4)
        pose[0, 3] = 1000.0 * segment + speed * step
        kept = rng.random(len(scene.xyz)) < keep
        world = scene.xyz.astype(np.float32)  # a copy: the movers move in it
        for instance, velocity in (movers or {}).items():
            world[scene.labels == instance, :2] += np.float32(step) * np.asarray(
                velocity, np.float32)
        xyz = world[kept] - np.array([speed * step, 0, 0], np.float32)
        xyz += rng.normal(0, 0.01, xyz.shape).astype(np.float32)
        intensity = scene.intensity[kept].astype(np.float32)
        labels = scene.labels[kept].astype(np.int64)
        kind = (bad_frames or {}).get(t)
        if kind == "empty":
            xyz, intensity = np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
            labels = np.zeros(0, np.int64)
        elif kind == "nan":
            xyz = np.full((500, 3), np.nan, np.float32)
            intensity = np.zeros(500, np.float32)
            labels = np.zeros(500, np.int64)
        clouds.append(xyz)
        intensities.append(intensity)
        poses.append(pose)
        truth.append(labels)
    return (clouds, intensities, poses, truth) if with_labels else (clouds, intensities, poses)


def write_synthetic_bag(path: str | Path, frames: int = 50, *, storage: str = "sqlite3",
                        topic: str = "/velodyne_points", **kwargs) -> Path:
    clouds, intensities, poses = synthetic_drive(frames, **kwargs)
    return write_cloud_bag(path, clouds, intensities=intensities, poses=poses, topic=topic,
                           storage=storage, extra_string_topic="/status")

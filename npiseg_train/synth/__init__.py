"""Procedural training scenes: indoor RGB-D rooms and outdoor spinning-LiDAR street scans.

Both generators are deterministic functions of an integer seed and return a ``SynthScene``
with a per-point instance id for every point (stuff regions included). Dataset helpers
(``make_scene``, the benchmark-format writer CLI) live in ``npiseg_train.synth.cli``.
"""
from npiseg_train.synth.lidar import generate_lidar_scene
from npiseg_train.synth.rgbd import generate_indoor_scene
from npiseg_train.synth.scene import (INDOOR_CLASSES, LIDAR_CLASSES, STUFF_CLASSES, SynthScene,
                                      nearby_object_samples)
from npiseg_train.synth.sensors import LIDAR_MODELS

__all__ = ["SynthScene", "generate_indoor_scene", "generate_lidar_scene",
           "nearby_object_samples", "INDOOR_CLASSES", "LIDAR_CLASSES", "STUFF_CLASSES",
           "LIDAR_MODELS"]

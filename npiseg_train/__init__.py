"""npiseg_train: offline training for NPISeg3D (synthetic data, training loop, checkpoints).

This package is never imported by the ROS node or by ``npiseg_ros.core``; it sits on top of
``npiseg_ros.core`` and ``npiseg_ros.eval``.

- ``npiseg_train.synth``: procedural indoor RGB-D rooms and outdoor spinning-LiDAR scans with
  per-point instance labels, written in the benchmark format of ``npiseg_ros.eval``.
"""

__version__ = "0.1.0"

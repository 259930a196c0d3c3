"""File and message formats without ROS and without PyTorch (numpy only).

- :mod:`~npiseg_ros.io.atomic`: crash-safe writes (temporary file, fsync, rename).
- :mod:`~npiseg_ros.io.autosave`: the annotation autosave (write, load, recover after a crash),
  its records, and the exported annotation files (PLY, SemanticKITTI ``.label``, NPZ).
- :mod:`~npiseg_ros.io.pointcloud2`: PointCloud2 field layouts, decoded from and encoded to
  duck-typed messages (rclpy's ``sensor_msgs`` and the ``rosbags`` classes alike).
- :mod:`~npiseg_ros.io.transforms`: ``geometry_msgs/Transform`` <-> 4x4 matrices (duck-typed too).
- :mod:`~npiseg_ros.io.ply`, :mod:`~npiseg_ros.io.pcd`, :mod:`~npiseg_ros.io.label`: PLY, PCD
  and SemanticKITTI ``.label`` files; :mod:`~npiseg_ros.io.colors`: packed RGB and the display
  colour of every object id; :mod:`~npiseg_ros.io.errors`: the error of a malformed file.

The node (``npiseg_ros.ros``), the browser tool (``npiseg_ros.annotate``) and the evaluation
(``npiseg_ros.eval``) all read and write through this package.
"""

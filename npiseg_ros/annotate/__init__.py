"""``npiseg-annotate``: label and triage recorded LiDAR drives in the browser, no ROS needed.

Same :class:`~npiseg_ros.core.session.SegmentationSession` as the ROS node, the node's atomic
autosave and export writers, frames from rosbag2 bags (sqlite3, MCAP), KITTI velodyne/ folders
and PLY/PCD/NPZ files. See ``docs/annotate.md``.
"""

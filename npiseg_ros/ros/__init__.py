"""ROS 2 adapter over :mod:`npiseg_ros.core`: the segmentation node, its conversions, parameters,
annotation files and the over-DDS demo. Importing this package needs rclpy and the message
packages; the core never imports it."""

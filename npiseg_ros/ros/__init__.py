"""ROS 2 adapter over :mod:`npiseg_ros.core` and :mod:`npiseg_ros.annotation`: the segmentation
node, its worker thread, message conversions, parameters and the over-DDS demo. Importing this package needs rclpy and the message
packages; the core never imports it."""

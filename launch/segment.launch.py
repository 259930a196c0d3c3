"""Launch the npiseg segmentation node with the shipped parameters and Fast DDS profile.

    ros2 launch npiseg_ros segment.launch.py [params_file:=...] [checkpoint:=...]
        [cloud_topic:=/velodyne_points] [rviz:=true]

`checkpoint` and `cloud_topic` override the params file only when given. The Fast DDS
shared-memory profile is exported to every process this launch starts; start the cloud publisher
(driver, bag player) with the same FASTDDS_DEFAULT_PROFILES_FILE so that large clouds use shared
memory too (the publisher's profile decides).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

OVERRIDABLE = ("checkpoint", "cloud_topic")


def _segment_node(context):
    """The node, with the params file plus the overrides given on the command line."""
    parameters = [LaunchConfiguration("params_file").perform(context)]
    overrides = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    overrides = {name: value for name, value in overrides.items() if value}
    if overrides:
        parameters.append(overrides)  # later entries win over the file
    return [Node(
        package="npiseg_ros",
        executable="segment_node",
        name="npiseg",
        output="screen",
        emulate_tty=True,
        parameters=parameters,
    )]


def generate_launch_description():
    share = get_package_share_directory("npiseg_ros")
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "segment.yaml"),
            description="Node parameters (YAML)"),
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Model checkpoint (.safetensors); empty: the params file's value"),
        DeclareLaunchArgument(
            "cloud_topic", default_value="",
            description="PointCloud2 input topic; empty: the params file's value (/points)"),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
            description="Fast DDS profile with a large shared-memory segment"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz"),
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        OpaqueFunction(function=_segment_node),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, "config", "npiseg.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])

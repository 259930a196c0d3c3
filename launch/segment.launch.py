"""Launch the npiseg segmentation node with the shipped parameters and Fast DDS profile.

    ros2 launch npiseg_ros segment.launch.py [params_file:=...] [checkpoint:=...]
        [cloud_topic:=/points] [rviz:=true]

The Fast DDS shared-memory profile is exported to every process this launch starts; start the
cloud publisher (driver, bag player) with the same FASTDDS_DEFAULT_PROFILES_FILE so that large
clouds use shared memory too (the publisher's profile decides).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def _segment_node(parameters, condition):
    return Node(
        package="npiseg_ros",
        executable="segment_node",
        name="npiseg",
        output="screen",
        emulate_tty=True,
        parameters=parameters,
        condition=condition,
    )


def generate_launch_description():
    share = get_package_share_directory("npiseg_ros")
    params_file = LaunchConfiguration("params_file")
    checkpoint = LaunchConfiguration("checkpoint")
    cloud_topic = LaunchConfiguration("cloud_topic")
    # Only override the params file's checkpoint when one is given on the command line.
    checkpoint_given = PythonExpression(["'", checkpoint, "' != ''"])
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "segment.yaml"),
            description="Node parameters (YAML)"),
        DeclareLaunchArgument(
            "checkpoint", default_value="",
            description="Model checkpoint (.safetensors); empty keeps the params file's value"),
        DeclareLaunchArgument(
            "cloud_topic", default_value="/points", description="PointCloud2 input topic"),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
            description="Fast DDS profile with a large shared-memory segment"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start RViz"),
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        # Later entries of `parameters` override earlier ones.
        _segment_node([params_file, {"cloud_topic": cloud_topic}],
                      UnlessCondition(checkpoint_given)),
        _segment_node([params_file, {"cloud_topic": cloud_topic, "checkpoint": checkpoint}],
                      IfCondition(checkpoint_given)),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, "config", "npiseg.rviz")],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])

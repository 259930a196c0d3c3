"""Launch the npiseg segmentation node with the shipped parameters and Fast DDS profile.

    ros2 launch npiseg_ros segment.launch.py [namespace:=/lidar] [cloud_topic:=/velodyne_points]
        [clicked_point_topic:=/clicked_point] [qos_reliability:=best_effort|reliable]
        [checkpoint:=auto|FILE.safetensors] [device:=auto|cpu|cuda|cuda:N]
        [cloud_policy:=latch|follow] [rviz:=true] [params_file:=...] [fastdds_profile:=...]

Every argument except ``namespace``, ``clicked_point_topic``, ``rviz``, ``params_file`` and
``fastdds_profile`` overrides the params file only when given (empty = the file's value).

Topics: the node's names are relative (``points``, ``clicked_point``, ``~/segmented``...), so
``namespace:=/lidar`` moves every one of them (``/lidar/points``, ``/lidar/clicked_point``,
``/lidar/npiseg/segmented``); without it they are ``/points`` and ``/clicked_point`` as RViz
publishes. ``clicked_point_topic`` remaps the clicks (``clicked_point_topic:=/clicked_point``:
RViz's default topic for a namespaced node). ``/diagnostics`` stays global (ROS convention).

``rviz:=true`` starts RViz with the shipped view when rviz2 is installed, and otherwise says so
and runs the node alone. When the node ends (an error at start, Ctrl-C), the whole launch ends
with it, so RViz is never left behind; when it FAILED (a non-zero exit code, e.g. 2 for a bad
checkpoint) ``ros2 launch`` exits non-zero too. Colour codes only when the output is a terminal.

The node's OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE``) unless the
environment sets ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (on cores nothing else uses,
``GOMP_SPINCOUNT=300000``, libgomp's default spin, answers clicks sooner; docs/backbone.md).

The Fast DDS shared-memory profile is exported to every process this launch starts; start the
cloud publisher (driver, bag player) with the same FASTDDS_DEFAULT_PROFILES_FILE so that large
clouds use shared memory too (the publisher's profile decides).
"""
import os
import sys

from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, LogInfo, OpaqueFunction,
                            SetEnvironmentVariable, Shutdown)
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# Launch arguments that override the node parameter of the same name when not empty.
OVERRIDABLE = {
    "cloud_topic": "PointCloud2 input topic (file: points, relative: in the namespace)",
    "qos_reliability": "best_effort (receives from sensor drivers and reliable publishers) "
                       "or reliable (file: best_effort)",
    "checkpoint": "auto (the shipped model) or a .safetensors file (file: auto)",
    "device": "auto, cpu, cuda or cuda:N (file: auto)",
    "cloud_policy": "latch (annotate one cloud until reset) or follow (file: latch)",
}


def rviz2_installed() -> bool:
    """Whether the rviz2 package (and its executable) is installed in the sourced ROS."""
    try:
        prefix = get_package_prefix("rviz2")
    except PackageNotFoundError:
        return False
    return os.access(os.path.join(prefix, "lib", "rviz2", "rviz2"), os.X_OK)


def openmp_environment() -> dict[str, str]:
    """``OMP_WAIT_POLICY=PASSIVE`` for the node unless the environment chooses how OpenMP
    threads wait (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``): spinning threads collapse when
    other processes load the cores (encode and decode 10x slower and more), sleeping ones cost
    ~15-20 ms per click on idle cores (docs/backbone.md, "One PyTorch thread, and how OpenMP
    threads wait")."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return {}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


class NodeFailed(RuntimeError):
    """segment_node ended with a non-zero exit code. Raised inside launch on purpose: launch
    then logs it, shuts everything down and returns 1, which ``ros2 launch`` exits with (an
    exception is launch's only path to a non-zero code; a Shutdown action alone returns 0)."""


def on_node_exit(event, context):
    """The launch ends with the node, non-zero when the node failed (``event``: launch's
    ProcessExited, with the ``returncode``)."""
    if event.returncode != 0:
        raise NodeFailed(f"segment_node exited with code {event.returncode} (its output above "
                         "says why)")
    return [Shutdown(reason="segment_node ended")]


def _actions(context):
    """The node with the params file plus the given overrides; RViz when asked and present."""
    parameters = [LaunchConfiguration("params_file").perform(context)]
    clicks = LaunchConfiguration("clicked_point_topic").perform(context)
    overrides = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    overrides = {name: value for name, value in overrides.items() if value}
    environment = openmp_environment()
    if overrides:
        parameters.append(overrides)  # later entries win over the file
    actions = [Node(
        package="npiseg_ros",
        executable="segment_node",
        name="npiseg",
        namespace=LaunchConfiguration("namespace").perform(context),
        remappings=[("clicked_point", clicks)] if clicks else [],
        output="screen",
        emulate_tty=sys.stdout.isatty(),  # no colour codes in a log file
        parameters=parameters,
        on_exit=on_node_exit,
        **({"additional_env": environment} if environment else {}),
    )]
    if LaunchConfiguration("rviz").perform(context).lower() in ("true", "1", "yes"):
        if rviz2_installed():
            share = get_package_share_directory("npiseg_ros")
            actions.append(Node(
                package="rviz2", executable="rviz2", name="rviz2", output="log",
                arguments=["-d", os.path.join(share, "config", "npiseg.rviz")]))
        else:
            actions.append(LogInfo(msg="rviz:=true, but rviz2 is not installed "
                                   "(sudo apt install ros-$ROS_DISTRO-rviz2): running the node "
                                   "without RViz"))
    return actions


def generate_launch_description():
    share = get_package_share_directory("npiseg_ros")
    arguments = [
        DeclareLaunchArgument(
            "namespace", default_value="",
            description="Namespace of the node and all its topics (e.g. /lidar; empty: none)"),
        DeclareLaunchArgument(
            "clicked_point_topic", default_value="",
            description="Where the RViz clicks come from (empty: clicked_point in the "
                        "namespace, /clicked_point without one)"),
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "segment.yaml"),
            description="Node parameters (YAML)"),
        *[DeclareLaunchArgument(name, default_value="", description=text)
          for name, text in OVERRIDABLE.items()],
        DeclareLaunchArgument(
            "rviz", default_value="false",
            description="Also start RViz with config/npiseg.rviz (when rviz2 is installed)"),
        DeclareLaunchArgument(
            "fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
            description="Fast DDS profile with a large shared-memory segment"),
    ]
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable(
            "FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        OpaqueFunction(function=_actions),
    ])

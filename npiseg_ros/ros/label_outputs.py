"""The node's label outputs: ``~/segmented``, ``~/uncertainty`` and ``~/markers`` of one cloud.

Two threads publish labels: the worker after each decode (``on_labels``) and, in follow mode,
the carrying thread for every answered sweep (``on_answer``). Each keeps its own last cloud's
x, y, z packed (:class:`~npiseg_ros.ros.conversions.OutputClouds`: packed once per cloud,
reused for every decode of it), so neither ever touches the other's.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from npiseg_ros.ros import conversions
from npiseg_ros.ros.markers import build_markers
from npiseg_ros.ros.worker_types import Snapshot, SweepAnswer

__all__ = ["LabelPublishers"]


class LabelPublishers:
    """The three label topics of ``node``, published with ``qos`` (latched by the node).

    :meth:`publish_snapshot` is called from the worker thread only, :meth:`publish_answer`
    from the carrying thread only.
    """

    def __init__(self, node: Node, qos: QoSProfile) -> None:
        self._segmented_pub = node.create_publisher(PointCloud2, "~/segmented", qos)
        self._uncertainty_pub = node.create_publisher(PointCloud2, "~/uncertainty", qos)
        self._markers_pub = node.create_publisher(MarkerArray, "~/markers", qos)
        # (cloud, its packed x, y, z) published last by each thread
        self._decoded: tuple[Any, conversions.OutputClouds] | None = None
        self._answered: tuple[Any, conversions.OutputClouds] | None = None

    def publish_snapshot(self, snapshot: Snapshot) -> None:
        """The decode of the annotated cloud, with that cloud's header."""
        cloud, prediction = snapshot.cloud, snapshot.prediction
        if self._decoded is None or self._decoded[0] is not cloud:
            self._decoded = (cloud, _packed(cloud))
        points = {oid: stats.num_points for oid, stats in prediction.object_stats.items()}
        self._publish(cloud, self._decoded[1], prediction.labels, prediction.uncertainty,
                      snapshot.clicks, points, prediction.suggested_click)

    def publish_answer(self, answer: SweepAnswer) -> None:
        """Follow mode: one sweep's labels with ITS header (stamp), so a viewer draws them
        where the sweep was."""
        cloud = answer.cloud
        if self._answered is None or self._answered[0] is not cloud:
            self._answered = (cloud, _packed(cloud))
        self._publish(cloud, self._answered[1], answer.labels, answer.uncertainty,
                      answer.clicks, answer.object_points, answer.suggested_click)

    def _publish(self, cloud, outputs: conversions.OutputClouds, labels: np.ndarray,
                 uncertainty: np.ndarray, clicks, points: dict[int, int], suggestion) -> None:
        header = Header(frame_id=cloud.frame_id, stamp=cloud.stamp)
        self._segmented_pub.publish(outputs.segmented(header, labels, uncertainty))
        self._uncertainty_pub.publish(outputs.uncertainty(header, uncertainty))
        self._markers_pub.publish(build_markers(cloud.frame_id, cloud.stamp, clicks, points,
                                                suggestion))


def _packed(cloud) -> conversions.OutputClouds:
    """The output clouds of ``cloud`` (``conversions.CloudArrays``), x, y, z packed."""
    return conversions.OutputClouds(cloud.xyz, cloud.height, cloud.width)

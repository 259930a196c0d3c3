"""A programmatic client of the segmentation node, used by the scripted demo user and the tests.

It publishes clouds and clicks, calls the services, and keeps the latest ``~/state``,
``~/segmented``, ``~/uncertainty`` and ``~/markers``. Waiting is always on a condition (a
message satisfying a predicate, a matched subscription, an available service), spinning its own
executor meanwhile, never on a fixed sleep.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from geometry_msgs.msg import Point, PointStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from npiseg_ros.msg import Click, SegmentationState
from npiseg_ros.srv import NewObject, SaveAnnotation

__all__ = ["SegmentationClient"]


class SegmentationClient:
    """Talks to the node named ``node_name`` (default ``/npiseg``) from its own rclpy node."""

    def __init__(self, name: str = "npiseg_client", node_name: str = "/npiseg",
                 cloud_topic: str = "/points") -> None:
        self.node = Node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.latest: dict[str, Any] = {}
        self.counts: dict[str, int] = {"state": 0, "segmented": 0, "uncertainty": 0,
                                       "markers": 0}
        # time.perf_counter() when the latest message of each topic was handed to this client
        self.received_at: dict[str, float] = {}
        for key, kind in (("state", SegmentationState), ("segmented", PointCloud2),
                          ("uncertainty", PointCloud2), ("markers", MarkerArray)):
            self.node.create_subscription(kind, f"{node_name}/{key}",
                                          lambda msg, key=key: self._store(key, msg), latched)
        # The cloud is latched too, so a node (re)started later still receives it.
        self.cloud_pub = self.node.create_publisher(PointCloud2, cloud_topic, latched)
        self.clicked_point_pub = self.node.create_publisher(PointStamped, "/clicked_point", 10)
        self.click_pub = self.node.create_publisher(Click, f"{node_name}/click", 10)
        self.services = {
            "reset": self.node.create_client(Trigger, f"{node_name}/reset"),
            "undo": self.node.create_client(Trigger, f"{node_name}/undo"),
            "new_object": self.node.create_client(NewObject, f"{node_name}/new_object"),
            "save_annotation": self.node.create_client(SaveAnnotation,
                                                       f"{node_name}/save_annotation"),
            "set_parameters": self.node.create_client(SetParameters,
                                                      f"{node_name}/set_parameters"),
        }

    def _store(self, key: str, msg) -> None:
        self.received_at[key] = time.perf_counter()
        self.latest[key] = msg
        self.counts[key] += 1

    def close(self) -> None:
        self._executor.remove_node(self.node)
        self.node.destroy_node()

    # ------------------------------------------------------------------ waiting
    def spin_until(self, predicate: Callable[[], Any], timeout_s: float = 60.0,
                   what: str = "condition") -> Any:
        """Spin until ``predicate()`` is truthy; return its value. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self._executor.spin_once(timeout_sec=0.05)

    def wait_for_node(self, timeout_s: float = 60.0) -> None:
        """Until the node subscribes to our cloud/click topics and offers its services."""
        self.spin_until(lambda: self.cloud_pub.get_subscription_count() > 0
                        and self.click_pub.get_subscription_count() > 0
                        and self.clicked_point_pub.get_subscription_count() > 0,
                        timeout_s, "the node's subscriptions")
        for name, client in self.services.items():
            self.spin_until(client.service_is_ready, timeout_s, f"service {name}")
        # Receiving the node's (latched) state means the discovery data went both ways, so the
        # node's readers have matched our writers too: the first message sent is not lost.
        self.spin_until(lambda: "state" in self.latest, timeout_s, "the node's first state")

    def wait_for_state(self, predicate: Callable[[SegmentationState], bool],
                       timeout_s: float = 60.0, what: str = "state") -> SegmentationState:
        """The first state (latest first, then new ones) satisfying ``predicate``."""
        def check():
            state = self.latest.get("state")
            return state if state is not None and predicate(state) else None
        return self.spin_until(check, timeout_s, what)

    def wait_for_error(self, after_count: int, timeout_s: float = 60.0) -> str:
        """The reason of the next rejected input (error_count grows past ``after_count``)."""
        return self.wait_for_state(lambda s: s.error_count > after_count, timeout_s,
                                   "an error on ~/state").last_error

    def wait_for_labels(self, predicate: Callable[[np.ndarray], bool], timeout_s: float = 60.0,
                        what: str = "labels") -> np.ndarray:
        """The ``label`` field of the first ``~/segmented`` message satisfying ``predicate``."""
        def check():
            labels = self.segmented_labels()
            return [labels] if labels is not None and predicate(labels) else None
        return self.spin_until(check, timeout_s, what)[0]

    # ------------------------------------------------------------------ inputs
    def publish_cloud(self, msg: PointCloud2) -> None:
        self.cloud_pub.publish(msg)

    def publish_cloud_until(self, msg: PointCloud2,
                            predicate: Callable[[SegmentationState], bool],
                            timeout_s: float = 120.0, retry_s: float = 2.0) -> SegmentationState:
        """Publish ``msg`` until a state satisfies ``predicate`` (e.g. the node took the cloud).

        For a node that may have just (re)started: after a crash, discovery still lists the
        dead node's subscription for a while, so "matched" cannot tell that the new one is
        listening. Re-sending the same cloud is harmless (the node skips identical points).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.publish_cloud(msg)
            try:
                return self.wait_for_state(predicate, retry_s, "the cloud to be taken")
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def click(self, position: tuple[float, float, float] | None = None, object_id: int = 1,
              background: bool = False, frame_id: str = "", point_index: int = -1) -> None:
        """Labelled click on ``~/click`` (position in ``frame_id``, metres; or a point index)."""
        msg = Click(header=Header(frame_id=frame_id), object_id=object_id,
                    background=background, point_index=point_index)
        if position is not None:
            msg.point = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
        self.click_pub.publish(msg)

    def rviz_click(self, position: tuple[float, float, float], frame_id: str) -> None:
        """What RViz's "Publish Point" tool sends: an unlabelled PointStamped."""
        self.clicked_point_pub.publish(PointStamped(
            header=Header(frame_id=frame_id),
            point=Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))))

    def call(self, service: str, request=None, timeout_s: float = 120.0):
        """Call one of the node's services and wait for the response."""
        client = self.services[service]
        future = client.call_async(request if request is not None else client.srv_type.Request())
        return self.spin_until(lambda: future.result() if future.done() else None, timeout_s,
                               f"the {service} response")

    def set_parameter(self, name: str, value: Any, timeout_s: float = 30.0):
        """Set one of the node's parameters; returns its SetParametersResult."""
        request = SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call("set_parameters", request, timeout_s).results[0]

    # ------------------------------------------------------------------ outputs
    def segmented_labels(self) -> np.ndarray | None:
        """(N,) uint32 ``label`` field of the latest ``~/segmented`` message."""
        msg = self.latest.get("segmented")
        if msg is None:
            return None
        offsets = {field.name: field.offset for field in msg.fields}
        record = np.dtype({"names": ["label"], "formats": ["<u4"],
                           "offsets": [offsets["label"]], "itemsize": msg.point_step})
        return np.frombuffer(bytes(msg.data), dtype=record)["label"].copy()

"""The npiseg segmentation node: convert -> hand to the worker -> convert -> publish.

Run: ``python -m npiseg_ros.ros.node --ros-args --params-file config/segment.yaml``.
Topics, services and parameters are listed in ``docs/ros.md``. All session work happens on the
:class:`~npiseg_ros.ros.worker.AnnotationWorker` thread; callbacks here only convert messages
(clicks into the cloud's frame), validate, and queue, so the executor never waits for a decode.
The node implements the worker's :class:`~npiseg_ros.ros.worker.WorkerEvents`: it publishes
what the worker reports.
"""
from __future__ import annotations

import signal
import sys
import threading

import rclpy
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from npiseg_ros.annotation import ResumeOutcome
from npiseg_ros.core.errors import ClickRejectedError, ConfigError, InvalidCloudError, NPISegError
from npiseg_ros.core.types import MAX_OBJECT_ID, CloudSummary
from npiseg_ros.msg import Click, SegmentationState
from npiseg_ros.ros import conversions, params, paths
from npiseg_ros.ros.frames import ClickTransformer
from npiseg_ros.ros.markers import build_markers
from npiseg_ros.ros.session_factory import build_session
from npiseg_ros.ros.state import ErrorInfo, build_state
from npiseg_ros.ros.worker import AnnotationWorker, ClickRequest, Snapshot, WorkerOptions
from npiseg_ros.srv import NewObject, SaveAnnotation

NODE_NAME = "npiseg"


class SegmentationNode(Node):
    """Interactive point-cloud segmentation by clicks, with per-point uncertainty."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for spec in params.PARAMETERS:
            self.declare_parameter(spec.name, spec.default, params.descriptor(spec))
        self.settings = params.NodeSettings.from_values(
            {spec.name: self.get_parameter(spec.name).value for spec in params.PARAMETERS})
        self._output_root = paths.output_root(self.settings.output_directory)
        # Values from a params file or launch argument (e.g. qos_reliability:=besteffort) are
        # checked like run-time changes: a wrong one stops the node with the reason (exit 2).
        reasons = [reason for spec in params.PARAMETERS if (reason := self._refusal(
            spec.name, getattr(self.settings, spec.name))) is not None]
        if reasons:
            raise ConfigError("; ".join(reasons))
        self.get_logger().info(f"writing only inside {self._output_root}")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._error = ErrorInfo()
        self._snapshot: Snapshot | None = None
        # the output clouds' packed x, y, z of the cloud published last (worker thread only)
        self._outputs: tuple[object, conversions.OutputClouds] | None = None
        self._state_lock = threading.Lock()
        self._transformer = ClickTransformer(self)
        # The models are loaded on the worker thread, which runs every PyTorch call of the
        # node (see AnnotationWorker); start() raises a loading error here (exit 2).
        settings = self.settings
        self.worker = AnnotationWorker(
            session_factory=self._build_session, events=self,
            options=WorkerOptions(settings.cloud_policy, settings.autosave_directory,
                                  settings.resume),
            active_object=settings.active_object, output_directory=settings.output_directory)

        group = ReentrantCallbackGroup()
        # Latched outputs: a viewer or test that subscribes late still gets the current result.
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._segmented_pub = self.create_publisher(PointCloud2, "~/segmented", latched)
        self._uncertainty_pub = self.create_publisher(PointCloud2, "~/uncertainty", latched)
        self._markers_pub = self.create_publisher(MarkerArray, "~/markers", latched)
        self._state_pub = self.create_publisher(SegmentationState, "~/state", latched)
        cloud_qos = QoSProfile(depth=settings.qos_depth, reliability=(
            ReliabilityPolicy.BEST_EFFORT if settings.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE))
        self.create_subscription(PointCloud2, settings.cloud_topic, self._on_cloud,
                                 cloud_qos, callback_group=group)
        self.create_subscription(PointStamped, "/clicked_point", self._on_clicked_point, 10,
                                 callback_group=group)
        self.create_subscription(Click, "~/click", self._on_click, 10, callback_group=group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self.create_service(Trigger, "~/undo", self._on_undo, callback_group=group)
        self.create_service(NewObject, "~/new_object", self._on_new_object, callback_group=group)
        self.create_service(SaveAnnotation, "~/save_annotation", self._on_save,
                            callback_group=group)
        self.worker.start()
        self._publish_state()

    def _build_session(self):
        """Load the models and build the session (called on the worker thread)."""
        session, loaded = build_session(self.settings)
        if "UNTRAINED" in loaded:  # only with allow_untrained: true (tests)
            self.get_logger().warning("allow_untrained: no checkpoint found, using an "
                                      + loaded + " - labels are meaningless")
        self.get_logger().info(f"model: {loaded}")
        return session

    # ------------------------------------------------------------------ inputs
    def _on_cloud(self, msg: PointCloud2) -> None:
        try:
            cloud = conversions.cloud_to_arrays(msg, max_points=self.settings.max_points)
        except Exception as error:  # a bug must not kill the executor either: reject, say why
            self.on_rejected("cloud rejected: " + (str(error) if isinstance(
                error, InvalidCloudError) else f"unexpected error reading it: {error!r}"))
            return
        self.worker.submit_cloud(cloud)

    def _on_clicked_point(self, msg: PointStamped) -> None:
        """RViz "Publish Point": labelled with the current ``active_object``."""
        self._queue_click(msg, self.settings.active_object, None, "/clicked_point")

    def _on_click(self, msg: Click) -> None:
        object_id = 0 if msg.background else int(msg.object_id)
        if not msg.background and not 1 <= object_id <= MAX_OBJECT_ID:
            self.on_rejected(f"click rejected: object_id {object_id} is not an object id "
                             f"(1..{MAX_OBJECT_ID}); set background=true for a background click")
            return
        self._queue_click(PointStamped(header=msg.header, point=msg.point), object_id,
                          None if msg.point_index < 0 else int(msg.point_index), "~/click")

    def _queue_click(self, click: PointStamped, object_id: int, point_index: int | None,
                     source: str) -> None:
        """Queue a click, its position brought into the cloud's frame first (tf2)."""
        position = None
        if point_index is None:
            try:  # no cloud yet: queued as it is, the worker says there is nothing to click
                position = self._transformer.to_frame(click, self.worker.cloud_frame,
                                                      self.settings.transform_timeout)
            except ClickRejectedError as error:
                self.on_rejected(f"{source} rejected: {error}")
                return
        self.worker.submit_click(ClickRequest(object_id, position, point_index, source))
        self._publish_state()  # shows the queued click (pending_clicks) during a long decode

    # ------------------------------------------------------------------ services
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        _, error = self.worker.reset()
        response.success, response.message = error is None, error or "clicks cleared"
        return response

    def _on_undo(self, request: Trigger.Request, response: Trigger.Response):
        removed, error = self.worker.undo()
        response.success = error is None
        response.message = error or f"removed the click on object {removed.object_id}"
        return response

    def _on_new_object(self, request: NewObject.Request, response: NewObject.Response):
        object_id, error = self.worker.new_object()  # never the active object again
        if error is None:
            self.set_parameters([Parameter("active_object", value=object_id)])
            response.object_id = object_id
        response.success, response.message = error is None, error or f"active object {object_id}"
        return response

    def _on_save(self, request: SaveAnnotation.Request, response: SaveAnnotation.Response):
        path, error = self.worker.save(request.path, request.format)
        response.success, response.path = error is None, path or ""
        response.message = error or f"annotation written to {path}"
        if error:
            self.on_rejected(f"save_annotation failed: {error}")
        return response

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        reasons = [reason for change in changes
                   if (reason := self._refusal(change.name, change.value)) is not None]
        if reasons:
            self.get_logger().warning(f"parameter change rejected: {'; '.join(reasons)}")
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        updates = {c.name: c.value for c in changes if hasattr(self.settings, c.name)}
        self.settings = self.settings.replace(**updates)
        self.worker.configure(**{name: value for name, value in updates.items()
                                 if name in AnnotationWorker.CONFIGURABLE})
        if "active_object" in updates:
            self._publish_state()
        return SetParametersResult(successful=True)

    def _refusal(self, name: str, value) -> str | None:
        """Why parameter ``name`` cannot take ``value``, None when it can. A graph client must
        not redirect writes out of ``output_directory``."""
        if name == "autosave_directory" and value:
            try:
                paths.resolve_inside(self._output_root, value, name)
            except paths.PathNotAllowedError as error:
                return f"{error}; set output_directory to a directory that contains it"
        return params.validate(name, value)

    # ------------------------------------------------------------------ worker events
    def on_cloud_adopted(self, summary: CloudSummary) -> None:
        if summary.model == "rgb":
            self.get_logger().info("cloud has colours: segmenting it with the RGB (indoor) model")
        if summary.num_dropped:
            self.get_logger().info(f"dropped {summary.num_dropped} of {summary.num_points} "
                                   "points with non-finite coordinates")

    def on_resumed(self, outcome: ResumeOutcome) -> None:
        if outcome.replayed:
            self.get_logger().info(f"resumed {outcome.replayed} clicks from the autosave of "
                                   "this cloud")
        if outcome.relabelled:
            self.get_logger().warning(f"the resumed clicks give labels that differ from the "
                                      f"saved ones at {outcome.relabelled} points")
        if outcome.active_object > 0:
            self.set_parameters([Parameter("active_object", value=outcome.active_object)])

    def on_rejected(self, reason: str) -> None:
        self.get_logger().warning(reason)
        with self._state_lock:
            self._error = ErrorInfo(reason, self.get_clock().now().to_msg(),
                                    self._error.count + 1)
        self._publish_state()

    def on_labels(self, snapshot: Snapshot) -> None:
        """Right after a decode, before its autosave is written: segmented + uncertainty
        clouds and markers (what the user looks at)."""
        if not self.context.ok():  # Ctrl-C: the context is gone, nothing can be published
            return
        cloud, prediction = snapshot.cloud, snapshot.prediction
        header = Header(frame_id=cloud.frame_id, stamp=cloud.stamp)
        if self._outputs is None or self._outputs[0] is not cloud:  # x, y, z packed per cloud
            self._outputs = (cloud, conversions.OutputClouds(cloud.xyz, cloud.height,
                                                             cloud.width))
        outputs = self._outputs[1]
        self._segmented_pub.publish(outputs.segmented(header, prediction.labels,
                                                      prediction.uncertainty))
        self._uncertainty_pub.publish(outputs.uncertainty(header, prediction.uncertainty))
        points = {oid: stats.num_points for oid, stats in prediction.object_stats.items()}
        self._markers_pub.publish(build_markers(cloud.frame_id, cloud.stamp, snapshot.clicks,
                                                points, prediction.suggested_click))

    def on_state(self, snapshot: Snapshot) -> None:
        """After every batch, once its autosave is written: the state."""
        if not self.context.ok():
            return
        with self._state_lock:
            self._snapshot = snapshot
        self._publish_state()

    def _publish_state(self) -> None:
        if not self.context.ok():
            return
        with self._state_lock:
            state = build_state(self._snapshot, self.settings.active_object, self._error,
                                self.get_clock().now().to_msg(), self.worker.pending_clicks)
            self._state_pub.publish(state)


SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; runs until SIGINT (Ctrl-C) or SIGTERM, then exits 0.

    No signal can interrupt the shutdown, however many arrive (``ros2 launch`` forwards a
    second SIGINT after the terminal's, then SIGTERM): they are blocked in this thread and in
    every thread started from here on (rclpy's DDS threads, the executor, the worker) and taken
    synchronously with ``sigtimedwait``; one delivered to a thread that existed before (BLAS
    pools started at import) only runs a Python handler that records it. On the first, the
    node stops taking input, lets the worker finish what it already received (autosave
    written), destroys the node and returns 0. Exit code 2: the node could not start (missing
    checkpoint, bad configuration); the reason is printed.
    """
    requested: list[int] = []
    for number in SHUTDOWN_SIGNALS:
        signal.signal(number, lambda signo, frame: requested.append(signo))
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    try:
        rclpy.init(args=sys.argv if argv is None else argv,
                   signal_handler_options=SignalHandlerOptions.NO)
    except Exception:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise
    node = executor = None
    try:
        try:
            node = SegmentationNode()
        except NPISegError as error:  # bad checkpoint / config: say why, exit non-zero
            print(f"npiseg node cannot start: {error}", file=sys.stderr)
            return 2
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor,), name="npiseg-executor",
                                   daemon=True)
        spinner.start()
        while not requested and spinner.is_alive():
            # Wakes at once on a blocked signal; the timeout notices a signal taken by the
            # Python handler and an executor that stopped.
            received = signal.sigtimedwait(SHUTDOWN_SIGNALS, 0.5)
            if received is not None:
                requested.append(received.si_signo)
        if requested:
            node.get_logger().info(
                f"{signal.Signals(requested[0]).name}: shutting down (the work already "
                "received and its autosave are finished first)")
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=10.0)  # no more callbacks: no new input
        if node is not None:
            node.worker.stop()  # finishes what it already took, autosave included
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin(executor: MultiThreadedExecutor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


if __name__ == "__main__":
    sys.exit(main())

"""The npiseg segmentation node: convert -> hand to the worker -> convert -> publish.

Run: ``python -m npiseg_ros.ros.node --ros-args --params-file config/segment.yaml`` (or
``bin/segment_node``; signals and exit codes: :mod:`npiseg_ros.ros.node_main`).
Topics, services and parameters are listed in ``docs/ros.md``. All session work happens on the
:class:`~npiseg_ros.ros.worker.AnnotationWorker` thread; callbacks here only convert messages
(clicks into the cloud's frame), validate, and queue, so the executor never waits for a decode.
The node implements the worker's :class:`~npiseg_ros.ros.worker_types.WorkerEvents`: it
publishes what the worker reports (labels through :mod:`npiseg_ros.ros.label_outputs`).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    # python -m npiseg_ros.ros.node: take SIGINT / SIGTERM before the imports below (torch,
    # rclpy: seconds) can be interrupted by them; node_main imports this module itself.
    from npiseg_ros.ros.node_main import main as _main

    sys.exit(_main())

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import PointCloud2
from std_srvs.srv import Trigger

from npiseg_ros.annotation import ResumeOutcome
from npiseg_ros.core.errors import ClickRejectedError, ConfigError, InvalidCloudError, NPISegError
from npiseg_ros.core.types import MAX_OBJECT_ID, CloudSummary
from npiseg_ros.msg import Click, SegmentationState
from npiseg_ros.ros import conversions, diagnostics, params, paths
from npiseg_ros.ros.frames import ClickTransformer
from npiseg_ros.ros.label_outputs import LabelPublishers
from npiseg_ros.ros.node_main import ShutdownSignals
from npiseg_ros.ros.session_factory import build_session
from npiseg_ros.ros.state import ErrorInfo, build_state
from npiseg_ros.ros.worker import AnnotationWorker
from npiseg_ros.ros.worker_types import ClickRequest, Snapshot, SweepAnswer, WorkerOptions
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
        self._state_lock = threading.Lock()
        self._transformer = ClickTransformer(self)
        self._pose_problem: str | None = None   # why the last sweep pose lookup failed
        self._checkpoints: dict = {}  # model role -> checkpoint path (set by _build_session)
        self._device = ""
        self._health = diagnostics.NodeHealth(self.resolve_topic_name(self.settings.cloud_topic))
        # The models are loaded on the worker thread, which runs every PyTorch call of the
        # node (see AnnotationWorker); start() raises a loading error here (exit 2).
        settings = self.settings
        self.worker = AnnotationWorker(
            session_factory=self._build_session, events=self,
            options=WorkerOptions(settings.cloud_policy, settings.autosave_directory,
                                  settings.resume, settings.ego_fallback, settings.save_every,
                                  settings.save_every_clicks, settings.save_format),
            active_object=settings.active_object, output_directory=settings.output_directory,
            pose_of=self._sweep_pose, max_output_mb=settings.max_output_mb)

        group = ReentrantCallbackGroup()
        # Latched outputs: a viewer or test that subscribes late still gets the current result.
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._labels = LabelPublishers(self, latched)   # ~/segmented, ~/uncertainty, ~/markers
        self._state_pub = self.create_publisher(SegmentationState, "~/state", latched)
        cloud_qos = QoSProfile(depth=settings.qos_depth, reliability=(
            ReliabilityPolicy.BEST_EFFORT if settings.qos_reliability == "best_effort"
            else ReliabilityPolicy.RELIABLE))
        self.create_subscription(PointCloud2, settings.cloud_topic, self._on_cloud,
                                 cloud_qos, callback_group=group)
        # Relative names (points, clicked_point): a namespace or remapping moves them; without
        # one they are /points and /clicked_point, where RViz's "Publish Point" publishes.
        self.create_subscription(PointStamped, "clicked_point", self._on_clicked_point, 10,
                                 callback_group=group)
        self.create_subscription(Click, "~/click", self._on_click, 10, callback_group=group)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self.create_service(Trigger, "~/undo", self._on_undo, callback_group=group)
        self.create_service(NewObject, "~/new_object", self._on_new_object, callback_group=group)
        self.create_service(SaveAnnotation, "~/save_annotation", self._on_save,
                            callback_group=group)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray,
                                                      diagnostics.DIAGNOSTICS_TOPIC, 10)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=group)
        self.worker.start()
        self._publish_state()

    def _build_session(self):
        """Load the models and build the session (called on the worker thread)."""
        session, loaded = build_session(self.settings)
        self._checkpoints, self._device = dict(session.router.paths), str(session.device)
        if "UNTRAINED" in loaded:  # only with allow_untrained: true (tests)
            self.get_logger().warning("allow_untrained: no checkpoint found, using an "
                                      + loaded + " - labels are meaningless")
        self.get_logger().info(f"model: {loaded}")
        return session

    # ------------------------------------------------------------------ inputs
    def _on_cloud(self, msg: PointCloud2) -> None:
        self._health.cloud_received(time.monotonic())
        try:
            cloud = conversions.cloud_to_arrays(msg, max_points=self.settings.max_points)
        except Exception as error:  # a bug must not kill the executor either: reject, say why
            reason = str(error) if isinstance(error, InvalidCloudError) else \
                f"unexpected error reading it: {error!r}"
            self._health.cloud_rejected(time.monotonic(), reason)
            self.on_rejected("cloud rejected: " + reason)
            return
        self.worker.submit_cloud(cloud)

    def _on_clicked_point(self, msg: PointStamped) -> None:
        """RViz "Publish Point": labelled with the current ``active_object``."""
        self._queue_click(msg, self.settings.active_object, None, "clicked_point")

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
        """Queue a click, its position brought into the frame of the cloud it was made on
        (what a viewer shows: ``worker.click_target``) with tf2 at that cloud's stamp."""
        position = None
        target = self.worker.click_target_at(click.header.stamp)
        if point_index is None:
            try:  # no cloud yet: queued as it is, the worker says there is nothing to click
                position = self._transformer.to_frame(
                    click, None if target is None else target.frame_id,
                    self.settings.transform_timeout, None if target is None else target.stamp)
            except ClickRejectedError as error:
                self.on_rejected(f"{source} rejected: {error}")
                return
        try:
            self.worker.submit_click(ClickRequest(object_id, position, point_index, source,
                                                  sweep=target))
        except ClickRejectedError as error:
            self.on_rejected(f"{source} rejected: {error}")
            return
        self._publish_state()  # shows the queued click (pending_clicks) during a long decode

    def _sweep_pose(self, cloud):
        """Follow mode (either worker thread): (4, 4) ``fixed_frame`` <- the cloud's frame at
        its stamp, None without tf. Waits ``transform_timeout`` only while lookups succeed, so
        a missing tree costs no time per sweep; a change is logged once."""
        wait = self.settings.transform_timeout if self._pose_problem is None else 0.0
        pose, problem = self._transformer.pose(self.settings.fixed_frame, cloud.frame_id,
                                               cloud.stamp, wait)
        if (problem or None) != self._pose_problem:
            if problem:
                self.get_logger().warning(f"follow: {problem}; ego motion by "
                                          f"ego_fallback={self.settings.ego_fallback}")
            else:
                self.get_logger().info(f"follow: sweep poses from tf in "
                                       f"'{self.settings.fixed_frame}' again")
            self._pose_problem = problem or None
        return pose

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
        if self.context.ok():  # Ctrl-C: the context is gone, nothing can be published
            self._labels.publish_snapshot(snapshot)

    def on_answer(self, answer: SweepAnswer) -> None:
        """Follow mode, on the carrying thread: one sweep's labels, with ITS header (stamp),
        so a viewer draws them where the sweep was."""
        if self.context.ok():
            self._labels.publish_answer(answer)

    def on_output_removed(self, removed: list[str]) -> None:
        self.get_logger().info(f"max_output_mb: removed {len(removed)} of the node's oldest "
                               f"files to stay under {self.settings.max_output_mb:g} MB: "
                               + ", ".join(removed))

    def on_state(self, snapshot: Snapshot) -> None:
        """After every batch, once its autosave is written: the state."""
        if not self.context.ok():
            return
        with self._state_lock:
            self._snapshot = snapshot
        self._health.decoded(snapshot.prediction.decode_ms)
        self._publish_state()

    def _publish_state(self) -> None:
        if not self.context.ok():
            return
        with self._state_lock:
            state = build_state(self._snapshot, self.settings.active_object, self._error,
                                self.get_clock().now().to_msg(), self.worker.pending_clicks)
            self._state_pub.publish(state)

    def _publish_diagnostics(self) -> None:
        """``/diagnostics``, once a second (:mod:`npiseg_ros.ros.diagnostics`)."""
        if not self.context.ok():
            return
        with self._state_lock:
            snapshot = self._snapshot
        role = "" if snapshot is None else snapshot.summary.model
        follow = self.settings.cloud_policy == "follow"
        health = self._health.report(
            time.monotonic(), model=diagnostics.model_name(self._checkpoints, role), role=role,
            cloud_policy=self.settings.cloud_policy, queue_depth=self.worker.pending_clicks,
            encode_ms=None if snapshot is None else snapshot.summary.encode_ms,
            stream=self.worker.stream_stats if follow else None)
        self._diagnostics_pub.publish(diagnostics.diagnostic_array(
            health, f"{self.get_fully_qualified_name()}: segmentation", self._device,
            self.get_clock().now().to_msg()))


def run(signals: ShutdownSignals, args: list[str]) -> int:
    """Run the node until ``signals`` reports SIGINT or SIGTERM; the process's exit code.

    :func:`npiseg_ros.ros.node_main.main` calls this with the signals already blocked in every
    thread (what each exit code means and what a signal does in each phase: that module). On
    the first signal the node stops taking input, lets the worker finish what it already
    received (autosave written), destroys the node and returns 0.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    code = 0
    try:
        try:
            node = SegmentationNode()
        except NPISegError as error:  # bad checkpoint / config: say why, exit non-zero
            print(f"npiseg node cannot start: {error}", file=sys.stderr)
            return 2
        if signals.wait(0):  # arrived while the models were loading: never spin
            node.get_logger().info(f"{signals.first_name} during start-up: not started")
            return 0
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        spinner = threading.Thread(target=_spin, args=(executor,), name="npiseg-executor",
                                   daemon=True)
        spinner.start()
        # Wakes at once on a signal; the timeout notices an executor that stopped.
        while not signals.wait(0.5) and spinner.is_alive():
            pass
        if signals.requested:
            node.get_logger().info(f"{signals.first_name}: shutting down (the work already "
                                   "received and its autosave are finished first)")
        else:
            print("npiseg node: the executor stopped (error above); shutting down",
                  file=sys.stderr)
            code = 1
    finally:
        signals.ignore_further()
        if executor is not None:
            executor.shutdown(timeout_sec=10.0)  # no more callbacks: no new input
        if node is not None:
            node.worker.stop()  # finishes what it already took, autosave included
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(argv: list[str] | None = None) -> int:
    """The node's console entry point, :func:`npiseg_ros.ros.node_main.main` (kept here for
    callers of ``npiseg_ros.ros.node:main``; this module's imports have run by then)."""
    from npiseg_ros.ros.node_main import main as entry

    return entry(argv)


def _spin(executor: MultiThreadedExecutor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:
        pass

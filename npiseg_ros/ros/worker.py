"""The thread that owns the segmentation session; ROS callbacks only hand it work.

Why a single owner thread: the session's encode/decode take from milliseconds to seconds, and
callbacks must never wait for them (the executor would stop delivering clicks, clouds and
service calls). Callbacks put clicks and commands into one FIFO and the latest cloud into a
one-slot mailbox; the worker drains everything that arrived, applies it in arrival order, then
decodes ONCE for the whole batch (clicks made during a decode are applied together) and hands a
:class:`Snapshot` to the publisher. Only this thread touches the session, so a cloud arriving in
the middle of a decode just waits in the mailbox and cannot corrupt it.

No rclpy here: the node passes plain callables, so this logic is testable without a ROS graph.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from npiseg_ros.core.errors import NoCloudError, NPISegError
from npiseg_ros.core.types import CloudSummary, Prediction
from npiseg_ros.ros import annotation, paths
from npiseg_ros.ros.annotation import AnnotationRecord, ClickRecord

__all__ = ["ClickRequest", "Snapshot", "AnnotationWorker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClickRequest:
    """A click as received: a position in ``frame_id`` (metres) or a point index.

    ``frame_id`` empty means the cloud's frame. ``source`` names the input for error messages.
    """

    object_id: int
    position: tuple[float, float, float] | None = None
    frame_id: str = ""
    point_index: int | None = None
    source: str = "click"
    raw: Any = None  # the original message, for the frame transformer


@dataclass
class _Command:
    kind: str
    arguments: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What the publisher needs after a batch: the cloud, its summary, clicks and prediction."""

    cloud: Any                      # conversions.CloudArrays
    fingerprint: str
    summary: CloudSummary
    clicks: tuple[ClickRecord, ...]
    prediction: Prediction
    pending_clicks: int


class AnnotationWorker:
    """Owns a ``SegmentationSession`` and applies clouds, clicks and commands in order.

    Every PyTorch call of the node happens on the worker thread, the model loading included
    when ``session`` is a factory: each thread that runs PyTorch ops gets its own OpenMP thread
    team, and with more OpenMP threads than cores libgomp stops spinning between parallel
    regions, which made every encode and decode ~1.5-2x slower when the models were loaded on
    the main thread (docs/backbone.md, "One PyTorch thread").

    Args:
        session: the core session (used from the worker thread only), or None with
            ``session_factory``.
        session_factory: a zero-argument callable that builds the session; :meth:`start` runs
            it on the worker thread and raises what it raised (the node loads its models so).
        publish: called with a :class:`Snapshot` after every batch that changed something,
            once its autosave is written (the node publishes ``~/state`` from it: a state that
            reports N clicks means they are on disk).
        publish_labels: called with the same snapshot right after the decode, BEFORE the
            autosave is written (the node publishes the labelled clouds from it, so the user
            sees the labels without waiting for the disk), or None.
        report_error: called with a human-readable reason for every rejected input.
        transform: ``transform(request, cloud_frame) -> (x, y, z)`` in the cloud frame; raises
            ``ClickRejectedError`` when it cannot.
        settings: initial ``cloud_policy``, ``autosave_directory``, ``resume``.
        output_directory: the only directory tree written to (autosave and saves); paths from
            requests and ``autosave_directory`` are resolved inside it (``paths``).
        on_resume: called with the restored ``AnnotationRecord`` after a resume.
        log_info: where informational messages go (the node passes its ROS logger).
    """

    def __init__(self, session, publish: Callable[[Snapshot], None],
                 report_error: Callable[[str], None],
                 transform: Callable[[ClickRequest, str], tuple[float, float, float]],
                 cloud_policy: str = "latch", autosave_directory: str = "", resume: bool = True,
                 on_resume: Callable[[AnnotationRecord], None] | None = None,
                 log_info: Callable[[str], None] = log.info,
                 output_directory: str = ".",
                 publish_labels: Callable[[Snapshot], None] | None = None,
                 session_factory: Callable[[], Any] | None = None) -> None:
        if (session is None) == (session_factory is None):
            raise ValueError("give exactly one of session and session_factory")
        self._factory = session_factory
        self._session = session
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._publish = publish
        self._publish_labels = publish_labels
        self._report_error = report_error
        self._transform = transform
        self._on_resume = on_resume
        self._log_info = log_info
        self._options = {"cloud_policy": cloud_policy, "autosave_directory": autosave_directory,
                         "resume": resume}
        self._root = paths.output_root(output_directory)
        self._wake = threading.Condition()
        self._events: deque[ClickRequest | _Command] = deque()
        self._mailbox = None            # latest cloud not yet looked at
        self._latest_unused = None      # latest cloud ignored by the latch policy
        self._stopping = False
        self._cloud = None
        self._fingerprint = ""
        self._summary: CloudSummary | None = None
        self._clicks: list[ClickRecord] = []
        # Click counts whose prediction is still in the session's undo history (see
        # AnnotationRecord.decoded_at): lets a resume replay the decodes exactly.
        self._decoded_at: list[int] = []
        self._prediction: Prediction | None = None
        self._thread = threading.Thread(target=self._run, name="npiseg-worker", daemon=True)

    # ------------------------------------------------------------ called from callbacks
    def start(self) -> None:
        """Start the worker thread; with a session factory, wait until it has built the
        session there and raise the factory's error, if any (the thread then ends)."""
        self._thread.start()
        if self._factory is not None:
            self._built.wait()
            if self._build_error is not None:
                self._thread.join()
                raise self._build_error

    def stop(self) -> None:
        """Apply the clicks and commands already submitted (decode, autosave), then end."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30.0)

    @property
    def pending_clicks(self) -> int:
        """Clicks received but not yet taken by the worker."""
        with self._wake:  # a re-entrant lock: safe from the worker's own callbacks too
            return sum(isinstance(event, ClickRequest) for event in self._events)

    @property
    def cloud_frame(self) -> str:
        return "" if self._cloud is None else self._cloud.frame_id

    def submit_cloud(self, cloud) -> None:
        """Offer a decoded cloud; only the latest one waiting is kept."""
        with self._wake:
            self._mailbox = cloud
            self._wake.notify()

    def submit_click(self, request: ClickRequest) -> None:
        with self._wake:
            self._events.append(request)
            self._wake.notify()

    def call(self, kind: str, timeout_s: float = 120.0,
             **arguments: Any) -> tuple[Any, str | None]:
        """Run a command (undo, reset, new_object, save, configure) in order; wait for it.

        Returns (result, error reason or None).
        """
        command = _Command(kind, arguments)
        with self._wake:
            self._events.append(command)
            self._wake.notify()
        if not command.done.wait(timeout_s):
            return None, f"the node is busy: {kind} did not complete within {timeout_s:.0f} s"
        return command.result, command.error

    def configure(self, **changes: Any) -> None:
        """Change session attributes or worker options, in order, without waiting."""
        with self._wake:
            self._events.append(_Command("configure", changes))
            self._wake.notify()

    # ------------------------------------------------------------ worker thread
    def _run(self) -> None:
        if self._factory is not None:
            try:
                self._session = self._factory()
            except BaseException as error:  # re-raised by start() on the caller's thread
                self._build_error = error
                return
            finally:
                self._built.set()
        self._check_autosave_directory()
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._events or
                                    self._mailbox is not None)
                # Stopping: the clicks and commands already received are still applied and
                # autosaved (one last batch); a cloud not yet taken is dropped.
                stopping = self._stopping
                if stopping and not self._events:
                    return
                cloud, self._mailbox = (None if stopping else self._mailbox), None
                events = list(self._events)
                self._events.clear()
            try:
                self._process(cloud, events)
            except Exception as error:  # keep the node alive whatever happens in one batch
                log.exception("unexpected error in the segmentation worker")
                try:
                    self._report_error(f"internal error: {error!r}")
                except Exception:  # reporting itself failed (e.g. the node is shutting down)
                    pass
            finally:
                for event in events:
                    if isinstance(event, _Command):
                        event.done.set()
            if stopping:
                return

    def _process(self, cloud, events: list) -> None:
        changed = cloud is not None and self._offer_cloud(cloud)
        for event in events:
            if isinstance(event, ClickRequest):
                changed |= self._apply_click(event)
            else:
                if event.kind == "save" and changed:
                    self._predict_and_publish()
                    changed = False
                changed |= self._apply_command(event)
        if changed:
            self._predict_and_publish()

    def _offer_cloud(self, cloud) -> bool:
        """Adopt ``cloud`` if the policy allows; returns whether the annotation changed."""
        if self._cloud is not None and self._options["cloud_policy"] == "latch":
            self._latest_unused = cloud
            return False
        return self._adopt(cloud, carry_clicks=self._options["cloud_policy"] == "follow")

    def _adopt(self, cloud, carry_clicks: bool) -> bool:
        fingerprint = annotation.cloud_fingerprint(cloud.xyz)
        if fingerprint == self._fingerprint:
            self._cloud = cloud  # same points again (new stamp): nothing to recompute
            return False
        try:
            summary = self._session.set_cloud(cloud.xyz, colors=cloud.colors,
                                              intensity=cloud.intensity)
        except (NPISegError, ValueError) as error:  # ValueError: numeric trouble in the core
            self._report_error(f"cloud rejected: {error}")
            return False
        carried, self._clicks = self._clicks if carry_clicks else [], []
        self._decoded_at = []
        self._cloud, self._fingerprint, self._summary = cloud, fingerprint, summary
        self._prediction = None
        if summary.model == "rgb":
            self._log_info("cloud has colours: segmenting it with the RGB (indoor) model")
        if summary.num_dropped:
            self._log_info(f"dropped {summary.num_dropped} of {summary.num_points} points "
                           "with non-finite coordinates")
        for click in carried:  # follow policy: the same positions on the new cloud
            self._apply_click(ClickRequest(object_id=click.object_id, position=click.position,
                                           source="re-applied click"))
        if not carried and self._options["resume"]:
            self._resume()
        return True

    def _autosave_directory(self):
        """The resolved autosave directory, None when autosave is off; raises
        ``PathNotAllowedError`` when the parameter points outside the output directory."""
        directory = self._options["autosave_directory"]
        if not directory:
            return None
        return paths.resolve_inside(self._root, directory, "autosave_directory")

    def _check_autosave_directory(self) -> None:
        """At start: say at once when autosaves cannot be written (the node runs on)."""
        try:
            directory = self._autosave_directory()
            if directory is not None:
                annotation.check_writable(directory)
        except (OSError, NPISegError) as error:
            self._report_error(f"autosave directory not usable, annotations are kept in memory "
                               f"only until it is fixed: {error}")

    def _resume(self) -> None:
        try:
            directory = self._autosave_directory()
        except NPISegError as error:
            self._report_error(f"autosave not resumed: {error}")
            return
        if directory is None:
            return
        record, problems = annotation.recover_autosave(directory, self._fingerprint)
        for problem in problems:
            self._report_error(f"autosave: {problem}")
        if record is None or not record.clicks:
            return
        boundaries = [count for count in record.decoded_at if count <= len(record.clicks)]
        for number, click in enumerate(record.clicks, start=1):
            self._apply_click(ClickRequest(object_id=click.object_id,
                                           point_index=click.point_index, source="resumed click"))
            if number in boundaries[:-1] and len(self._clicks) == number:
                self._predict()  # same decode sequence as before the crash: same labels
        self._log_info(f"resumed {len(self._clicks)} clicks from the autosave of this cloud")
        if self._on_resume is not None:
            self._on_resume(record)

    def _apply_click(self, request: ClickRequest) -> bool:
        try:
            if self._cloud is None:
                raise NoCloudError("no cloud yet: publish a PointCloud2 before clicking")
            position = request.position
            if request.point_index is None:
                position = self._transform(request, self._cloud.frame_id)
            click = self._session.add_click(position if request.point_index is None else None,
                                            object_id=request.object_id,
                                            point_index=request.point_index)
        except (NPISegError, ValueError) as error:
            self._report_error(f"{request.source} rejected: {error}")
            return False
        self._clicks.append(ClickRecord(click.position, click.object_id, click.point_index))
        return True

    def _apply_command(self, command: _Command) -> bool:
        """Run one command; returns whether the annotation changed."""
        kind = command.kind
        try:
            if kind == "undo":
                removed = self._session.undo() if self._cloud is not None else None
                if removed is None:
                    command.error = "nothing to undo"
                    return False
                self._clicks.pop()
                while self._decoded_at and self._decoded_at[-1] > len(self._clicks):
                    self._decoded_at.pop()
                command.result = removed
                return True
            if kind == "reset":
                self._session.reset()
                self._clicks, self._decoded_at = [], []
                command.result = True
                if self._latest_unused is not None:  # latch released: take the newest cloud
                    cloud, self._latest_unused = self._latest_unused, None
                    self._adopt(cloud, carry_clicks=False)
                return self._cloud is not None
            if kind == "new_object":  # fresh id, above the active one (``above``)
                object_id = self._session.new_object()
                while object_id <= command.arguments.get("above", 0):
                    object_id = self._session.new_object()
                command.result = object_id
                return False
            if kind == "save":
                command.result = self._save(**command.arguments)
                return False
            if kind == "configure":
                for name, value in command.arguments.items():
                    if name in self._options:
                        self._options[name] = value
                    else:
                        setattr(self._session, name, value)
                return False
            command.error = f"unknown command {kind!r}"
        except (NPISegError, ValueError, OSError) as error:
            command.error = str(error)
        return False

    def _save(self, path: str, fmt: str) -> str:
        if self._cloud is None or self._prediction is None:
            raise ValueError("nothing to save yet: no cloud has been segmented")
        if not path:
            fmt = fmt or "npz"
            path = str((self._autosave_directory() or self._root) / f"annotation.{fmt}")
        fmt = annotation.format_from_path(path, fmt)
        path = paths.resolve_inside(self._root, path, "save_annotation path")
        written = annotation.save_annotation(
            path, fmt, self._cloud.xyz, self._prediction.labels, self._prediction.uncertainty,
            self._clicks)
        return str(written)

    def _predict(self) -> None:
        self._prediction = self._session.predict()
        if not self._decoded_at or self._decoded_at[-1] != len(self._clicks):
            self._decoded_at.append(len(self._clicks))

    def _predict_and_publish(self) -> None:
        if self._cloud is None:
            return
        self._predict()
        snapshot = Snapshot(cloud=self._cloud, fingerprint=self._fingerprint,
                            summary=self._summary, clicks=tuple(self._clicks),
                            prediction=self._prediction, pending_clicks=self.pending_clicks)
        if self._publish_labels is not None:
            self._publish_labels(snapshot)
        try:
            directory = self._autosave_directory()
        except NPISegError as error:
            self._report_error(f"autosave failed: {error}")
            directory = None
        if directory is not None:
            try:
                annotation.write_autosave(directory, AnnotationRecord(
                    fingerprint=self._fingerprint, frame_id=self._cloud.frame_id,
                    clicks=tuple(self._clicks),
                    active_object=max((c.object_id for c in self._clicks), default=0),
                    labels=self._prediction.labels, uncertainty=self._prediction.uncertainty,
                    decoded_at=tuple(self._decoded_at)))
            except (OSError, ValueError) as error:  # full disk, read-only, ...: state is kept
                self._report_error(f"autosave failed: {error}")
        self._publish(snapshot)

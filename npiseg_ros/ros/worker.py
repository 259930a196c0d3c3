"""The node's annotation worker: an :class:`AnnotationController` on its own thread and a queue.

Why a single owner thread: the session's encode/decode take from milliseconds to seconds, and
callbacks must never wait for them (the executor would stop delivering clicks, clouds and
service calls). Callbacks put clicks and commands into one FIFO and the latest cloud into a
one-slot mailbox; the worker drains everything that arrived, applies it in arrival order, then
decodes ONCE for the whole batch (clicks made during a decode are applied together) and reports
a :class:`Snapshot`. Only this thread touches the controller, so a cloud arriving in the middle
of a decode just waits in the mailbox and cannot corrupt it.

What the worker adds to the controller: the cloud policy (``latch`` / ``follow``), the queue,
the stop, and where and how much it may write (``output_directory``, its size cap, the
``save_every`` policy). It reports through :class:`WorkerEvents`, which the node implements. No
rclpy here: clicks arrive already in the frame of the cloud they were made on (the node
transforms them at that cloud's stamp before queueing), so this is testable without ROS.

Follow mode (``cloud_policy: follow``): this thread encodes the newest sweep each time it is
free (the sweeps in between are not encoded), re-applies the clicks there - kept in the fixed
frame and moved with their objects - and decodes; a second thread
(:class:`~npiseg_ros.annotation.stream.SweepStream`, numpy only) answers every sweep it can
by carrying the labels of the last decode onto it, and reports each answer
(:meth:`WorkerEvents.on_answer`) with the sweep's own stamp. Clicks are applied before the next
encode starts, so a click waits for at most the encode running when it came.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from npiseg_ros.annotation import SESSION_SETTINGS, AnnotationController, ResumeOutcome
from npiseg_ros.annotation.follow import EGO_FALLBACKS, Answer, Follower, move_click, \
    snap_to_object
from npiseg_ros.annotation.storage import OutputBudget
from npiseg_ros.annotation.stream import StreamStats, SweepStream, stamp_seconds, \
    time_seconds
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.core.types import CloudSummary, Prediction
from npiseg_ros.io.autosave import FORMATS, ClickRecord, autosave_path, check_writable, \
    cloud_fingerprint, previous_path
from npiseg_ros.ros import paths

__all__ = ["ClickRequest", "Snapshot", "SweepAnswer", "WorkerEvents", "WorkerOptions",
           "AnnotationWorker", "CLOUD_POLICIES", "SAVE_POLICIES", "StreamStats"]

log = logging.getLogger(__name__)

CLOUD_POLICIES = ("latch", "follow")
SAVE_POLICIES = ("never", "clicks", "cloud")
"""When the worker writes the labels by itself (``save_every``): never (only on request),
every ``save_every_clicks`` clicks, or for the cloud being left when the annotated cloud
changes (follow: every encode)."""


@dataclass(frozen=True)
class ClickRequest:
    """A click to apply: a position (x, y, z metres, ALREADY in the frame of ``sweep``) or a
    point index into the annotated cloud. ``source`` names the input in rejection messages.

    ``sweep``: the cloud the position was made on (:attr:`AnnotationWorker.click_target`, what
    a viewer showed); None = the annotated cloud. In follow mode a position on another sweep
    is moved onto the annotated one with the object under it."""

    object_id: int
    position: tuple[float, float, float] | None = None
    point_index: int | None = None
    source: str = "click"
    sweep: Any = None


@dataclass(frozen=True)
class Snapshot:
    """What the node publishes after a batch: the cloud, its summary, clicks and prediction."""

    cloud: Any                      # conversions.CloudArrays
    fingerprint: str
    summary: CloudSummary
    clicks: tuple[ClickRecord, ...]
    prediction: Prediction
    pending_clicks: int


@dataclass(frozen=True)
class SweepAnswer:
    """Follow mode: the labels of one sweep, to publish with the sweep's own header.

    Attributes:
        cloud: the sweep (``conversions.CloudArrays``: xyz, frame_id, stamp, height, width).
        labels: (N,) int64 object id per point (0 = background), -1 = unknown (no support).
        uncertainty: (N,) float32; carried points: the last decode's uncertainty around them,
            unknown points: its maximum; NaN for non-finite points.
        clicks: the clicks where they are on this sweep (positions in its frame, metres;
            ``point_index`` -1).
        object_points: object id (>= 1) -> points labelled with it.
        suggested_click: the last decode's suggestion moved onto this sweep, or None.
        carried: False when these are the sweep's own decode.
        carry_ms: time spent carrying, milliseconds.
    """

    cloud: Any
    labels: np.ndarray
    uncertainty: np.ndarray
    clicks: tuple[ClickRecord, ...]
    object_points: dict[int, int]
    suggested_click: tuple[float, float, float] | None
    carried: bool
    carry_ms: float


class WorkerEvents(Protocol):
    """What the worker reports, on its own thread (the node implements this)."""

    def on_cloud_adopted(self, summary: CloudSummary) -> None:
        """A new cloud is being annotated (encoded; before its clicks are resumed)."""

    def on_resumed(self, outcome: ResumeOutcome) -> None:
        """The autosave of the new cloud was found and its clicks replayed."""

    def on_labels(self, snapshot: Snapshot) -> None:
        """A batch was decoded; called BEFORE its autosave is written (the labels are
        published without waiting for the disk)."""

    def on_state(self, snapshot: Snapshot) -> None:
        """The same batch, once its autosave is written: a state that reports N clicks means
        they are on disk."""

    def on_rejected(self, reason: str) -> None:
        """An input or write was refused; ``reason`` is for the user."""

    def on_answer(self, answer: SweepAnswer) -> None:
        """Follow mode, on the carrying thread: labels for one sweep (publish them with its
        header); replaces :meth:`on_labels` there."""

    def on_output_removed(self, removed: list[str]) -> None:
        """Files the worker wrote earlier were removed to keep the output under its cap."""


@dataclass(frozen=True)
class WorkerOptions:
    """``cloud_policy``: latch (keep the first cloud until reset) or follow (answer every
    sweep, encoding the newest when free, see the module docstring); ``autosave_directory``:
    inside ``output_directory`` (relative: under it; empty: no autosave of the clicks);
    ``resume``: replay the autosave of a cloud seen before; ``ego_fallback``: the ego motion
    between sweeps without tf (:data:`~npiseg_ros.annotation.follow.EGO_FALLBACKS`);
    ``save_every`` (:data:`SAVE_POLICIES`), ``save_every_clicks`` and ``save_format``: when
    and how the labels are written without a request (under ``labels/`` of the autosave
    directory)."""

    cloud_policy: str = "latch"
    autosave_directory: str = ""
    resume: bool = True
    ego_fallback: str = "align"
    save_every: str = "never"
    save_every_clicks: int = 10
    save_format: str = "npz"

    def __post_init__(self) -> None:
        for name, choices in (("cloud_policy", CLOUD_POLICIES), ("ego_fallback", EGO_FALLBACKS),
                              ("save_every", SAVE_POLICIES), ("save_format", FORMATS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, name)!r}")
        if self.save_every_clicks < 1:
            raise ValueError(f"save_every_clicks must be >= 1, got {self.save_every_clicks}")


Reply = tuple[Any, str | None]
"""(result, None) or (None, reason) of a command."""


@dataclass
class _Command:
    name: str
    run: Callable[[], tuple[Any, bool]]    # -> (result, whether the annotation changed)
    needs_decode: bool = False             # run on the decode of the clicks before it
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str | None = None


class _Refused(Exception):
    """A command that cannot run now; the message is the reply."""


class AnnotationWorker:
    """Applies clouds, clicks and commands in arrival order on one thread.

    Every PyTorch call of the node happens on the worker thread, the model loading included
    when ``session_factory`` is given: each thread that runs PyTorch ops gets its own OpenMP
    thread team, and with more OpenMP threads than cores libgomp stops spinning between
    parallel regions, which made every encode and decode ~1.5-2x slower when the models were
    loaded on the main thread (docs/backbone.md, "One PyTorch thread"). The follow mode's
    carrying thread runs numpy and scipy only.

    Args:
        session: the core session (used from the worker thread only), or None with
            ``session_factory``.
        events: where the worker reports (:class:`WorkerEvents`).
        options: initial :class:`WorkerOptions`.
        active_object: initial active object (the node's parameter).
        output_directory: the only directory tree written to (autosave and saves); paths from
            requests and ``autosave_directory`` are resolved inside it (``paths``).
        session_factory: a zero-argument callable that builds the session; :meth:`start` runs
            it on the worker thread and raises what it raised (the node loads its models so).
        pose_of: follow mode: (cloud) -> (4, 4) float64 fixed frame <- the cloud's frame at its
            stamp (tf), or None when there is none (``ego_fallback`` then); may wait a bounded
            time. Called from both threads.
        max_output_mb: cap on the files the worker writes into ``output_directory`` (10^6
            bytes; its oldest own files are removed first, :class:`OutputBudget`); 0 = no cap.
    """

    CONFIGURABLE = frozenset({f.name for f in dataclasses.fields(WorkerOptions)}
                             | SESSION_SETTINGS | {"active_object"})
    """Names :meth:`configure` takes."""

    def __init__(self, session=None, *, events: WorkerEvents,
                 options: WorkerOptions = WorkerOptions(), active_object: int = 1,
                 output_directory: str = ".",
                 session_factory: Callable[[], Any] | None = None,
                 pose_of: Callable[[Any], np.ndarray | None] | None = None,
                 max_output_mb: float = 0.0) -> None:
        if (session is None) == (session_factory is None):
            raise ValueError("give exactly one of session and session_factory")
        if max_output_mb < 0:
            raise ValueError(f"max_output_mb must be >= 0, got {max_output_mb}")
        self._factory = session_factory
        self._controller = None if session is None else AnnotationController(
            session, active_object=active_object)
        self._active_object = active_object
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._events = events
        self._options = options
        self._root = paths.output_root(output_directory)
        self._budget = OutputBudget(self._root, int(max_output_mb * 1e6))
        self._pose_of = pose_of or (lambda cloud: None)
        self._wake = threading.Condition()
        self._queue: deque[ClickRequest | _Command] = deque()
        self._mailbox = None            # latest cloud not yet looked at
        self._latest_unused = None      # latest cloud ignored by the latch policy
        self._stopping = False
        self._cloud = None              # the cloud being annotated (conversions.CloudArrays)
        self._answer: Answer | None = None   # follow: the annotated cloud's, current reference
        self._clicks_since_save = 0
        self._stream = SweepStream(Follower(options.ego_fallback), self._report_answer,
                                   self._pose_of)
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
                self._stream.stop()
                raise self._build_error

    def stop(self) -> None:
        """Apply the clicks and commands already submitted (decode, autosave), then end."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30.0)
        self._stream.stop()

    @property
    def pending_clicks(self) -> int:
        """Clicks received but not yet taken by the worker."""
        with self._wake:  # a re-entrant lock: safe from the worker's own events too
            return sum(isinstance(item, ClickRequest) for item in self._queue)

    @property
    def stream_stats(self) -> StreamStats:
        """Follow mode's counts: sweeps received, answered, carried, dropped, encoded."""
        return self._stream.stats

    @property
    def click_target(self):
        """The cloud a click queued now refers to (the node transforms clicks into its frame,
        at its stamp): in follow mode the sweep answered last (what a viewer shows), else the
        annotated cloud, or the waiting cloud when the worker will take it first; None before
        any cloud."""
        with self._wake:
            waiting, current = self._mailbox, self._cloud
            follow = self._options.cloud_policy == "follow"
        if follow:
            shown = self._stream.shown
            if shown is not None:
                return shown
        if waiting is not None and (current is None or follow):
            return waiting
        return current

    def click_target_at(self, stamp) -> Any:
        """:attr:`click_target` for a click stamped ``stamp`` (``sec``/``nanosec``): in follow
        mode a recently answered sweep with that very stamp when there is one (a client that
        names the sweep it clicked on; a viewer shows each sweep a little late), else the
        sweep answered last."""
        if stamp is not None and (stamp.sec or stamp.nanosec) and \
                self._options.cloud_policy == "follow":
            named = self._stream.answered_at(time_seconds(stamp))
            if named is not None:
                return named
        return self.click_target

    @property
    def cloud_frame(self) -> str | None:
        """The frame of :attr:`click_target` (None before any cloud)."""
        target = self.click_target
        return None if target is None else target.frame_id

    def submit_cloud(self, cloud) -> None:
        """Offer a decoded cloud (``conversions.CloudArrays``); only the latest one waiting is
        kept for the encoder. Follow mode: the carrying thread answers it too."""
        with self._wake:
            self._mailbox = cloud
            follow = self._options.cloud_policy == "follow"
            self._wake.notify()
        if follow:
            self._stream.offer(cloud)

    def submit_click(self, request: ClickRequest) -> None:
        self._enqueue(request)

    def undo(self, timeout_s: float = 120.0) -> Reply:
        """Remove the last click; replies with the removed :class:`ClickRecord`."""
        return self._call(_Command("undo", self._undo), timeout_s)

    def reset(self, timeout_s: float = 120.0) -> Reply:
        """Remove every click (a latched cloud waiting is taken now); replies True."""
        return self._call(_Command("reset", self._reset), timeout_s)

    def new_object(self, timeout_s: float = 120.0) -> Reply:
        """A fresh object id above every id used and the active one; it becomes active."""
        return self._call(_Command("new_object",
                                   lambda: (self._controller.new_object(), False)), timeout_s)

    def save(self, path: str, fmt: str = "", timeout_s: float = 120.0) -> Reply:
        """Export the annotation, with the clicks received before; replies with the path
        written. ``path`` empty: ``annotation.<fmt>`` in the autosave directory."""
        return self._call(_Command("save", lambda: (self._save(path, fmt), False),
                                   needs_decode=True), timeout_s)

    def configure(self, **changes: Any) -> None:
        """Change options, session settings or the active object (:data:`CONFIGURABLE`), in
        order with the clicks, without waiting."""
        unknown = set(changes) - self.CONFIGURABLE
        if unknown:
            raise ValueError(f"cannot configure {', '.join(sorted(unknown))}")
        self._enqueue(_Command("configure", lambda: (self._configure(changes), False)))

    def _enqueue(self, item: ClickRequest | _Command) -> None:
        with self._wake:
            self._queue.append(item)
            self._wake.notify()

    def _call(self, command: _Command, timeout_s: float) -> Reply:
        self._enqueue(command)
        if not command.done.wait(timeout_s):
            return None, (f"the node is busy: {command.name} did not complete within "
                          f"{timeout_s:.0f} s")
        return command.result, command.error

    # ------------------------------------------------------------ worker thread
    def _run(self) -> None:
        if self._factory is not None:
            try:
                self._controller = AnnotationController(self._factory(),
                                                        active_object=self._active_object)
            except BaseException as error:  # re-raised by start() on the caller's thread
                self._build_error = error
                return
            finally:
                self._built.set()
        self._check_autosave_directory()
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._queue or
                                    self._mailbox is not None)
                # Stopping: the clicks and commands already received are still applied and
                # autosaved (one last batch); a cloud not yet taken is dropped.
                stopping = self._stopping
                if stopping and not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
                # Follow: clicks go first, on the sweep they were made on; the newest sweep is
                # encoded on the next round, so a click never waits for an encode it did not
                # arrive during.
                clicks_first = (batch and self._cloud is not None
                                and self._options.cloud_policy == "follow")
                cloud = None if stopping or clicks_first else self._mailbox
                if cloud is not None:
                    self._mailbox = None
            try:
                self._process(cloud, batch)
            except Exception as error:  # keep the node alive whatever happens in one batch
                log.exception("unexpected error in the segmentation worker")
                try:
                    self._events.on_rejected(f"internal error: {error!r}")
                except Exception:  # reporting itself failed (e.g. the node is shutting down)
                    pass
            finally:
                for item in batch:
                    if isinstance(item, _Command):
                        item.done.set()
            if stopping:
                return

    def _process(self, cloud, batch: list) -> None:
        """Apply ``cloud`` then ``batch`` and decode once. ``edited``: the user changed the
        annotation (clicks, commands), which is autosaved; a followed sweep alone is not."""
        changed = cloud is not None and self._offer_cloud(cloud)
        edited = False
        for item in batch:
            if isinstance(item, ClickRequest):
                applied = self._apply_click(item)
                changed |= applied
                edited |= applied
                self._clicks_since_save += int(applied)
                continue
            if item.needs_decode and changed:
                self._publish_batch(edited)
                changed = edited = False
            try:
                item.result, effect = item.run()
                changed |= effect
                edited |= effect
            except (_Refused, NPISegError, ValueError, OSError) as error:
                item.error = str(error)
        if changed:
            self._publish_batch(edited)

    def _offer_cloud(self, cloud) -> bool:
        """Adopt ``cloud`` if the policy allows; returns whether the annotation changed."""
        if self._cloud is not None and self._options.cloud_policy == "latch":
            self._latest_unused = cloud
            return False
        return self._adopt(cloud)

    def _adopt(self, cloud) -> bool:
        controller = self._controller
        if cloud_fingerprint(cloud.xyz) == controller.fingerprint:
            self._cloud = cloud  # same points again (new stamp): nothing to recompute
            return False
        follow = self._options.cloud_policy == "follow"
        reference = self._stream.follower.reference
        answer = None  # the new sweep carried from the last decode: where the clicks go
        if follow and reference is not None and controller.has_cloud:
            answer = self._stream.answer_for(cloud, reference.token)
        if self._options.save_every == "cloud":
            self._save_labels()
        try:
            summary = controller.set_cloud(cloud.xyz, colors=cloud.colors,
                                           intensity=cloud.intensity, frame_id=cloud.frame_id)
        except (NPISegError, ValueError) as error:  # ValueError: numeric trouble in the core
            self._events.on_rejected(f"cloud rejected: {error}")
            return False
        self._cloud, self._answer = cloud, answer
        if follow:
            self._stream.note_encoded()
        self._events.on_cloud_adopted(summary)
        if answer is not None and answer.clicks:
            self._reapply(answer)
        elif self._options.resume:   # a cloud seen before (a bag played again): its clicks
            self._resume()
        return True

    def _reapply(self, answer: Answer) -> None:
        """Follow: the clicks of the last decode, moved with their objects onto the new sweep,
        each snapped onto a point carried with its object (the nearest point when none is)."""
        xyz = self._cloud.xyz
        limit = getattr(self._controller.session, "max_click_distance", 0.5)
        for position, object_id in answer.clicks:
            index = snap_to_object(xyz, answer.labels, position, object_id, limit)
            try:
                if index is None:
                    self._controller.click(tuple(position), object_id=object_id)
                else:
                    self._controller.click(point_index=index, object_id=object_id)
            except (NPISegError, ValueError) as error:
                self._events.on_rejected(f"re-applied click rejected: {error}")

    def _resume(self) -> None:
        try:
            directory = self._autosave_directory()
        except NPISegError as error:
            self._events.on_rejected(f"autosave not resumed: {error}")
            return
        if directory is None:
            return
        outcome = self._controller.resume(directory)
        for problem in outcome.problems:
            self._events.on_rejected(f"autosave: {problem}")
        for reason in outcome.skipped:
            self._events.on_rejected(f"resumed click rejected: {reason}")
        if outcome.found:
            self._events.on_resumed(outcome)

    def _autosave_directory(self):
        """The resolved autosave directory, None when autosave is off; raises
        ``PathNotAllowedError`` when the option points outside the output directory."""
        directory = self._options.autosave_directory
        if not directory:
            return None
        return paths.resolve_inside(self._root, directory, "autosave_directory")

    def _check_autosave_directory(self) -> None:
        """At start: say at once when autosaves cannot be written (the node runs on)."""
        try:
            directory = self._autosave_directory()
            if directory is not None:
                check_writable(directory)
        except (OSError, NPISegError) as error:
            self._events.on_rejected(f"autosave directory not usable, annotations are kept in "
                                     f"memory only until it is fixed: {error}")

    def _apply_click(self, request: ClickRequest) -> bool:
        position = request.position
        if (position is not None and request.point_index is None and request.sweep is not None
                and request.sweep is not self._cloud and self._answer is not None):
            shown = self._stream.answer_of(request.sweep)
            if shown is not None:   # made on another sweep: move it with the object under it
                position = tuple(float(v) for v in move_click(position, shown, self._answer))
        try:
            self._controller.click(position if request.point_index is None else None,
                                   point_index=request.point_index, object_id=request.object_id)
        except (NPISegError, ValueError) as error:
            self._events.on_rejected(f"{request.source} rejected: {error}")
            return False
        return True

    # ------------------------------------------------------------ commands
    def _undo(self) -> tuple[ClickRecord, bool]:
        removed = self._controller.undo()
        if removed is None:
            raise _Refused("nothing to undo")
        return removed, True

    def _reset(self) -> tuple[bool, bool]:
        unused, self._latest_unused = self._latest_unused, None
        if unused is not None and self._options.save_every == "cloud":
            self._save_labels()    # the latched cloud is left: its labels, before they go
        self._controller.reset()
        if unused is not None:     # latch released: take the newest cloud
            self._adopt(unused)
        return True, self._cloud is not None

    def _configure(self, changes: dict[str, Any]) -> None:
        options = {name: value for name, value in changes.items()
                   if name in {f.name for f in dataclasses.fields(WorkerOptions)}}
        self._options = dataclasses.replace(self._options, **options)
        if "ego_fallback" in options:
            self._stream.follower.ego_fallback = options["ego_fallback"]
        if options.get("cloud_policy") == "latch":
            self._stream.clear()   # a later follow starts from its next decode
            self._answer = None
        if "active_object" in changes:
            self._controller.select_object(changes["active_object"])
        self._controller.tune(**{name: value for name, value in changes.items()
                                 if name in SESSION_SETTINGS})

    def _save(self, path: str, fmt: str) -> str:
        if not path:
            fmt = fmt or "npz"
            path = str((self._autosave_directory() or self._root) / f"annotation.{fmt}")
        written = self._controller.save(
            paths.resolve_inside(self._root, path, "save_annotation path"), fmt)
        self._written(written)
        return str(written)

    def _save_labels(self) -> None:
        """``save_every``: write the current cloud's labels (when clicked and decoded) to
        ``labels/<stamp>_<fingerprint>.<save_format>`` of the autosave directory."""
        controller = self._controller
        if self._cloud is None or controller.prediction is None or not controller.clicks:
            return
        self._clicks_since_save = 0
        stamp = getattr(self._cloud, "stamp", None)
        seconds, nanoseconds = (0, 0) if stamp is None else (stamp.sec, stamp.nanosec)
        fmt = self._options.save_format
        try:
            folder = (self._autosave_directory() or self._root) / "labels"
            name = f"{seconds:010d}_{nanoseconds:09d}_{controller.fingerprint[:8]}.{fmt}"
            self._written(controller.save(paths.resolve_inside(self._root, folder / name,
                                                               "labels path"), fmt))
        except (OSError, ValueError, NPISegError) as error:
            self._events.on_rejected(f"labels not saved: {error}")

    def _written(self, *written) -> None:
        """Account for files just written and keep the output under its cap (never removing
        those, nor the autosave of the cloud being annotated: the crash safety)."""
        written = tuple(written) + tuple(previous_path(path) for path in written
                                         if previous_path(path).is_file())
        self._budget.record(*written)
        keep = written
        try:
            directory = self._autosave_directory()
        except NPISegError:
            directory = None
        if directory is not None and self._controller.fingerprint:
            current = autosave_path(directory, self._controller.fingerprint)
            keep += (current, previous_path(current))
        removed, problems = self._budget.enforce(keep=keep)
        if removed:
            self._events.on_output_removed([str(path) for path in removed])
        for problem in problems:
            self._events.on_rejected(f"output cap: {problem}")

    # ------------------------------------------------------------ outputs
    def _publish_batch(self, edited: bool = True) -> None:
        if self._cloud is None:
            return
        controller = self._controller
        prediction = controller.predict()
        snapshot = Snapshot(cloud=self._cloud, fingerprint=controller.fingerprint,
                            summary=controller.summary, clicks=controller.clicks,
                            prediction=prediction, pending_clicks=self.pending_clicks)
        follow = self._options.cloud_policy == "follow"
        if follow:
            self._new_reference(prediction)
        else:
            self._events.on_labels(snapshot)
        if edited or not follow:    # a followed sweep alone changes nothing worth saving
            try:
                directory = self._autosave_directory()
                if directory is not None:
                    self._written(controller.autosave(directory, with_labels=False))
            except (OSError, ValueError) as error:  # full disk, read-only, outside: kept
                self._events.on_rejected(f"autosave failed: {error}")
        if (self._options.save_every == "clicks"
                and self._clicks_since_save >= self._options.save_every_clicks):
            self._save_labels()
        self._events.on_state(snapshot)

    def _new_reference(self, prediction: Prediction) -> None:
        """Follow: the decode becomes what every later sweep is carried from."""
        cloud = self._cloud
        pose = self._answer.pose if self._answer is not None else self._pose_of(cloud)
        clicks = [(cloud.xyz[click.point_index], click.object_id)
                  for click in self._controller.clicks]
        self._answer = self._stream.follower.set_reference(
            cloud.xyz, prediction.labels, prediction.uncertainty,
            pose=np.eye(4) if pose is None else pose, stamp=stamp_seconds(cloud),
            clicks=clicks, suggestion=prediction.suggested_click)
        self._stream.decoded(cloud, self._answer)

    def _report_answer(self, cloud, answer: Answer) -> None:
        """On the carrying thread: one sweep's labels to the node."""
        labels = answer.labels
        counts = np.bincount(labels[labels > 0]) if (labels > 0).any() else np.zeros(0, int)
        clicks = tuple(ClickRecord(tuple(float(v) for v in position), int(object_id), -1)
                       for position, object_id in answer.clicks)
        suggestion = (None if answer.suggestion is None
                      else tuple(float(v) for v in answer.suggestion))
        self._events.on_answer(SweepAnswer(
            cloud, labels, answer.uncertainty, clicks,
            {int(i): int(n) for i, n in enumerate(counts) if n}, suggestion, answer.carried,
            answer.carry_ms))

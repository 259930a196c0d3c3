"""The node's annotation worker: an :class:`AnnotationController` on its own thread and a queue.

Why a single owner thread: the session's encode/decode take from milliseconds to seconds, and
callbacks must never wait for them (the executor would stop delivering clicks, clouds and
service calls). Callbacks put clicks and commands into one FIFO and the latest cloud into a
one-slot mailbox; the worker drains everything that arrived, applies it in arrival order, then
decodes ONCE for the whole batch (clicks made during a decode are applied together) and reports
a :class:`Snapshot`. Only this thread touches the controller, so a cloud arriving in the middle
of a decode just waits in the mailbox and cannot corrupt it.

What the worker adds to the controller: the cloud policy (``latch`` / ``follow``), the queue,
the stop, and where it may write (``output_directory``). It reports through
:class:`WorkerEvents`, which the node implements. No rclpy here: clicks arrive already in the
cloud's frame (the node transforms them before queueing), so this is testable without ROS.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from npiseg_ros.annotation import SESSION_SETTINGS, AnnotationController, ResumeOutcome
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.core.types import CloudSummary, Prediction
from npiseg_ros.io.autosave import ClickRecord, check_writable, cloud_fingerprint
from npiseg_ros.ros import paths

__all__ = ["ClickRequest", "Snapshot", "WorkerEvents", "WorkerOptions", "AnnotationWorker",
           "CLOUD_POLICIES"]

log = logging.getLogger(__name__)

CLOUD_POLICIES = ("latch", "follow")


@dataclass(frozen=True)
class ClickRequest:
    """A click to apply: a position (x, y, z metres, ALREADY in the cloud's frame) or a point
    index into the cloud. ``source`` names the input in rejection messages."""

    object_id: int
    position: tuple[float, float, float] | None = None
    point_index: int | None = None
    source: str = "click"


@dataclass(frozen=True)
class Snapshot:
    """What the node publishes after a batch: the cloud, its summary, clicks and prediction."""

    cloud: Any                      # conversions.CloudArrays
    fingerprint: str
    summary: CloudSummary
    clicks: tuple[ClickRecord, ...]
    prediction: Prediction
    pending_clicks: int


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


@dataclass(frozen=True)
class WorkerOptions:
    """``cloud_policy``: latch (keep the first cloud until reset) or follow (switch to every
    new cloud, re-applying the clicks); ``autosave_directory``: inside ``output_directory``
    (relative: under it; empty: no autosave); ``resume``: replay the autosave of a cloud seen
    before."""

    cloud_policy: str = "latch"
    autosave_directory: str = ""
    resume: bool = True

    def __post_init__(self) -> None:
        if self.cloud_policy not in CLOUD_POLICIES:
            raise ValueError(f"cloud_policy must be one of {', '.join(CLOUD_POLICIES)}, "
                             f"got {self.cloud_policy!r}")


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
    loaded on the main thread (docs/backbone.md, "One PyTorch thread").

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
    """

    CONFIGURABLE = frozenset({f.name for f in dataclasses.fields(WorkerOptions)}
                             | SESSION_SETTINGS | {"active_object"})
    """Names :meth:`configure` takes."""

    def __init__(self, session=None, *, events: WorkerEvents,
                 options: WorkerOptions = WorkerOptions(), active_object: int = 1,
                 output_directory: str = ".",
                 session_factory: Callable[[], Any] | None = None) -> None:
        if (session is None) == (session_factory is None):
            raise ValueError("give exactly one of session and session_factory")
        self._factory = session_factory
        self._controller = None if session is None else AnnotationController(
            session, active_object=active_object)
        self._active_object = active_object
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._events = events
        self._options = options
        self._root = paths.output_root(output_directory)
        self._wake = threading.Condition()
        self._queue: deque[ClickRequest | _Command] = deque()
        self._mailbox = None            # latest cloud not yet looked at
        self._latest_unused = None      # latest cloud ignored by the latch policy
        self._stopping = False
        self._cloud = None              # the cloud being annotated (conversions.CloudArrays)
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
        with self._wake:  # a re-entrant lock: safe from the worker's own events too
            return sum(isinstance(item, ClickRequest) for item in self._queue)

    @property
    def cloud_frame(self) -> str | None:
        """The frame a click queued now will be applied in (the node transforms clicks into
        it): the waiting cloud's when the worker will take it first, else the annotated
        cloud's; None before any cloud."""
        with self._wake:
            waiting, current = self._mailbox, self._cloud
            if waiting is not None and (current is None or
                                        self._options.cloud_policy == "follow"):
                return waiting.frame_id
            return None if current is None else current.frame_id

    def submit_cloud(self, cloud) -> None:
        """Offer a decoded cloud (``conversions.CloudArrays``); only the latest one waiting is
        kept."""
        with self._wake:
            self._mailbox = cloud
            self._wake.notify()

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
                cloud, self._mailbox = (None if stopping else self._mailbox), None
                batch = list(self._queue)
                self._queue.clear()
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
        changed = cloud is not None and self._offer_cloud(cloud)
        for item in batch:
            if isinstance(item, ClickRequest):
                changed |= self._apply_click(item)
                continue
            if item.needs_decode and changed:
                self._publish_batch()
                changed = False
            try:
                item.result, effect = item.run()
                changed |= effect
            except (_Refused, NPISegError, ValueError, OSError) as error:
                item.error = str(error)
        if changed:
            self._publish_batch()

    def _offer_cloud(self, cloud) -> bool:
        """Adopt ``cloud`` if the policy allows; returns whether the annotation changed."""
        if self._cloud is not None and self._options.cloud_policy == "latch":
            self._latest_unused = cloud
            return False
        return self._adopt(cloud, carry_clicks=self._options.cloud_policy == "follow")

    def _adopt(self, cloud, carry_clicks: bool) -> bool:
        controller = self._controller
        if cloud_fingerprint(cloud.xyz) == controller.fingerprint:
            self._cloud = cloud  # same points again (new stamp): nothing to recompute
            return False
        carried = controller.clicks if carry_clicks else ()
        try:
            summary = controller.set_cloud(cloud.xyz, colors=cloud.colors,
                                           intensity=cloud.intensity, frame_id=cloud.frame_id)
        except (NPISegError, ValueError) as error:  # ValueError: numeric trouble in the core
            self._events.on_rejected(f"cloud rejected: {error}")
            return False
        self._cloud = cloud
        self._events.on_cloud_adopted(summary)
        for click in carried:  # follow policy: the same positions on the new cloud
            self._apply_click(ClickRequest(click.object_id, position=click.position,
                                           source="re-applied click"))
        if not carried and self._options.resume:
            self._resume()
        return True

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
        try:
            self._controller.click(request.position if request.point_index is None else None,
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
        self._controller.reset()
        if self._latest_unused is not None:  # latch released: take the newest cloud
            cloud, self._latest_unused = self._latest_unused, None
            self._adopt(cloud, carry_clicks=False)
        return True, self._cloud is not None

    def _configure(self, changes: dict[str, Any]) -> None:
        options = {name: value for name, value in changes.items()
                   if name in {f.name for f in dataclasses.fields(WorkerOptions)}}
        self._options = dataclasses.replace(self._options, **options)
        if "active_object" in changes:
            self._controller.select_object(changes["active_object"])
        self._controller.tune(**{name: value for name, value in changes.items()
                                 if name in SESSION_SETTINGS})

    def _save(self, path: str, fmt: str) -> str:
        if not path:
            fmt = fmt or "npz"
            path = str((self._autosave_directory() or self._root) / f"annotation.{fmt}")
        return str(self._controller.save(
            paths.resolve_inside(self._root, path, "save_annotation path"), fmt))

    # ------------------------------------------------------------ outputs
    def _publish_batch(self) -> None:
        if self._cloud is None:
            return
        controller = self._controller
        prediction = controller.predict()
        snapshot = Snapshot(cloud=self._cloud, fingerprint=controller.fingerprint,
                            summary=controller.summary, clicks=controller.clicks,
                            prediction=prediction, pending_clicks=self.pending_clicks)
        self._events.on_labels(snapshot)
        try:
            directory = self._autosave_directory()
            if directory is not None:
                controller.autosave(directory)
        except (OSError, ValueError) as error:  # full disk, read-only, outside: state is kept
            self._events.on_rejected(f"autosave failed: {error}")
        self._events.on_state(snapshot)

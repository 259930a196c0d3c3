"""The node's annotation worker: an :class:`AnnotationController` on its own thread and a queue.

Why a single owner thread: the session's encode/decode take from milliseconds to seconds, and
callbacks must never wait for them (the executor would stop delivering clicks, clouds and
service calls). Callbacks put clicks and commands into one FIFO and the latest cloud into a
one-slot mailbox; the worker drains everything that arrived, applies it in arrival order, then
decodes ONCE for the whole batch (clicks made during a decode are applied together) and reports
a ``Snapshot``. Only this thread touches the controller, so a cloud arriving in the middle of a
decode just waits in the mailbox and cannot corrupt it.

What the worker adds to the controller: the cloud policy (``latch`` / ``follow``), the queue,
the stop, and the writes (``output_directory``, its size cap, ``save_every``). It reports
through ``WorkerEvents``, which the node implements. No rclpy here: clicks arrive already in
the frame of the cloud they were made on (the node transforms them at that cloud's stamp), so
this is testable without ROS.

Follow mode (``cloud_policy: follow``): this thread encodes the newest sweep each time it is
free and re-applies the clicks there (:mod:`~npiseg_ros.annotation.follow_mode`); a second
thread (:class:`~npiseg_ros.annotation.stream.SweepStream`) answers every sweep it can from
the last decode (``WorkerEvents.on_answer``). Clicks are applied before the next encode
starts, so a click waits for at most the encode running when it came.

The types the node exchanges with the worker: :mod:`~npiseg_ros.ros.worker_types`; the files it
writes and reads back: :mod:`~npiseg_ros.ros.worker_files`.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from npiseg_ros.annotation import SESSION_SETTINGS, AnnotationController
from npiseg_ros.annotation.follow import Follower
from npiseg_ros.annotation.follow_mode import FollowMode
from npiseg_ros.annotation.stream import StreamStats, SweepStream, time_seconds
from npiseg_ros.core.errors import ClickRejectedError, NPISegError
from npiseg_ros.io.autosave import ClickRecord, cloud_fingerprint
from npiseg_ros.ros.worker_files import OutputFiles
from npiseg_ros.ros.worker_types import ClickRequest, Command, Refused, Reply, Snapshot, \
    SweepAnswer, WorkerEvents, WorkerOptions

__all__ = ["AnnotationWorker", "MAX_PENDING_CLICKS"]

log = logging.getLogger(__name__)

MAX_PENDING_CLICKS = 64
"""Clicks that may wait for the worker at once; more are refused with a reason (a client that
floods ``/clicked_point`` during a long decode must not grow the queue without bound)."""


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
        events: where the worker reports (``worker_types.WorkerEvents``).
        options: initial ``worker_types.WorkerOptions``.
        active_object: initial active object (the node's parameter).
        output_directory: the only directory tree written to (autosave and saves); paths from
            requests and ``autosave_directory`` are resolved inside it (``paths``).
        session_factory: a zero-argument callable that builds the session; :meth:`start` runs
            it on the worker thread and raises what it raised (the node loads its models so).
        pose_of: follow mode: (cloud) -> (4, 4) float64 fixed frame <- the cloud's frame at its
            stamp (tf), or None when there is none (``ego_fallback`` then); may wait a bounded
            time. Called from both threads.
        max_output_mb: cap on the files the worker writes into ``output_directory`` (10^6
            bytes; its oldest own files are removed first, ``worker_files.OutputFiles``);
            0 = no cap.
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
        self._factory = session_factory
        self._controller = None if session is None else AnnotationController(
            session, active_object=active_object)
        self._active_object = active_object
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._events = events
        self._options = options
        self._files = OutputFiles(output_directory, max_output_mb, lambda: self._options, events)
        pose_of = pose_of or (lambda cloud: None)
        self._wake = threading.Condition()
        self._queue: deque[ClickRequest | Command] = deque()
        self._mailbox = None            # latest cloud not yet looked at
        self._latest_unused = None      # latest cloud ignored by the latch policy
        self._stopping = False
        self._cloud = None              # the cloud being annotated (conversions.CloudArrays)
        self._stream = SweepStream(      # the carrying thread reports each answer itself
            Follower(options.ego_fallback),
            lambda cloud, answer: events.on_answer(SweepAnswer.of(cloud, answer)), pose_of)
        self._follow = FollowMode(self._stream, pose_of)
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
        shown = self._stream.shown if follow else None
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
        """Queue a click.

        Raises:
            ClickRejectedError: :data:`MAX_PENDING_CLICKS` clicks already wait (nothing
                queued; the clicks already queued are all applied).
        """
        with self._wake:
            if self.pending_clicks >= MAX_PENDING_CLICKS:
                raise ClickRejectedError(
                    f"{MAX_PENDING_CLICKS} clicks already wait for the model; click again "
                    f"after the next answer")
            self._enqueue(request)

    def undo(self, timeout_s: float = 120.0) -> Reply:
        """Remove the last click; replies with the removed :class:`ClickRecord`."""
        return self._call(Command("undo", self._undo), timeout_s)

    def reset(self, timeout_s: float = 120.0) -> Reply:
        """Remove every click (a latched cloud waiting is taken now); replies True."""
        return self._call(Command("reset", self._reset), timeout_s)

    def new_object(self, timeout_s: float = 120.0) -> Reply:
        """A fresh object id above every id used and the active one; it becomes active."""
        return self._call(Command("new_object",
                                   lambda: (self._controller.new_object(), False)), timeout_s)

    def save(self, path: str, fmt: str = "", timeout_s: float = 120.0) -> Reply:
        """Export the annotation, with the clicks received before; replies with the path
        written. ``path`` empty: ``annotation.<fmt>`` in the autosave directory."""
        return self._call(Command(
            "save", lambda: (self._files.save(self._controller, path, fmt), False),
            needs_decode=True), timeout_s)

    def configure(self, **changes: Any) -> None:
        """Change options, session settings or the active object (:data:`CONFIGURABLE`), in
        order with the clicks, without waiting."""
        unknown = set(changes) - self.CONFIGURABLE
        if unknown:
            raise ValueError(f"cannot configure {', '.join(sorted(unknown))}")
        self._enqueue(Command("configure", lambda: (self._configure(changes), False)))

    def _enqueue(self, item: ClickRequest | Command) -> None:
        with self._wake:
            self._queue.append(item)
            self._wake.notify()

    def _call(self, command: Command, timeout_s: float) -> Reply:
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
        self._files.check_autosave_directory()
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
                    if isinstance(item, Command):
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
                self._files.clicks_applied(int(applied))
                continue
            if item.needs_decode and changed:
                self._publish_batch(edited)
                changed = edited = False
            try:
                item.result, effect = item.run()
                changed |= effect
                edited |= effect
            except (Refused, NPISegError, ValueError, OSError) as error:
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
        # the new sweep carried from the last decode: where the clicks go
        answer = self._follow.carry_onto(cloud) if follow and controller.has_cloud else None
        self._files.cloud_left(controller, self._cloud)
        try:
            summary = controller.set_cloud(cloud.xyz, colors=cloud.colors,
                                           intensity=cloud.intensity, frame_id=cloud.frame_id)
        except (NPISegError, ValueError) as error:  # ValueError: numeric trouble in the core
            self._events.on_rejected(f"cloud rejected: {error}")
            return False
        self._cloud, self._follow.annotated = cloud, answer
        if follow:
            self._stream.note_encoded()
        self._events.on_cloud_adopted(summary)
        if answer is not None and answer.clicks:
            for reason in self._follow.reapply(controller, cloud.xyz, answer):
                self._events.on_rejected(f"re-applied click rejected: {reason}")
        elif self._options.resume:   # a cloud seen before (a bag played again): its clicks
            self._files.resume(controller)
        return True

    def _apply_click(self, request: ClickRequest) -> bool:
        position = request.position
        if (position is not None and request.point_index is None and request.sweep is not None
                and request.sweep is not self._cloud):   # made on another sweep: follow it
            position = self._follow.onto_annotated(position, request.sweep)
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
            raise Refused("nothing to undo")
        return removed, True

    def _reset(self) -> tuple[bool, bool]:
        unused, self._latest_unused = self._latest_unused, None
        if unused is not None:     # the latched cloud is left: its labels, before they go
            self._files.cloud_left(self._controller, self._cloud)
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
            self._follow.clear()
        if "active_object" in changes:
            self._controller.select_object(changes["active_object"])
        self._controller.tune(**{name: value for name, value in changes.items()
                                 if name in SESSION_SETTINGS})

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
        if follow:   # the carrying thread shows it (on_answer)
            self._follow.decoded(self._cloud, controller.clicks, prediction)
        else:
            self._events.on_labels(snapshot)
        if edited or not follow:    # a followed sweep alone changes nothing worth saving
            self._files.autosave(controller)
        self._files.after_batch(controller, self._cloud)
        self._events.on_state(snapshot)

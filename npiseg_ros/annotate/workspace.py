"""The annotation workspace: an annotation controller over a sequence of frames, a session folder.

The :class:`~npiseg_ros.annotation.AnnotationController` does the clicks, decodes, undo,
objects, autosave and resume of the frame on screen. :class:`Workspace` composes it with the
frames (``frames.py``: order, reading, the next frame read ahead), carrying the frame left into
the next one (``carrying.py``, ``tracking.py``), the review record and imported labels
(``review.py``, classes from ``ontology.py``), saving and exports (``saving.py``,
``export.py``), the session folder (``folder.py``), the background thread
(``background.py``) and what the page sees (``view.py``); ``server.py`` serves it over HTTP.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from npiseg_ros.annotate import view
from npiseg_ros.annotate.background import BackgroundWorker
from npiseg_ros.annotate.carrying import CarryReport, LeftFrame, carry_mode, left_frame
from npiseg_ros.annotate.export import FrameExport, KittiCalib
from npiseg_ros.annotate.folder import SESSION_FILE, read_session_file, write_session_file
from npiseg_ros.annotate.frames import FrameSequence, Lookahead
from npiseg_ros.annotate.model_thread import ModelThread
from npiseg_ros.annotate.ontology import Ontology, OntologyError
from npiseg_ros.annotate.opening import FrameOpener
from npiseg_ros.annotate.review import ReviewState
from npiseg_ros.annotate.saving import FrameSaver
from npiseg_ros.annotate.session import AnnotateSession
from npiseg_ros.annotate.sources import Frame, FrameSource, SourceError, open_source
from npiseg_ros.annotate.tracking import remove_prior
from npiseg_ros.annotation import AnnotationController
from npiseg_ros.core.errors import ClickRejectedError
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.types import BACKGROUND_ID, MAX_OBJECT_ID, Prediction

__all__ = ["Workspace"]


class Workspace:
    """Frames + annotation controller + session folder: what ``server.py`` serves.

    Calls come from the server's request threads, one at a time under :attr:`lock`; the
    optional background thread (:meth:`start_background`) takes the same lock for workspace
    state; every model call, theirs and the decodes here, runs on :attr:`model_thread` (one
    thread, one OpenMP team: ``model_thread.py``). The parts:
    :attr:`annotation` (the frame on screen), :attr:`frames` (``frames.FrameSequence``),
    :attr:`review` (``review.ReviewState``), :attr:`saver` (``saving.FrameSaver``),
    :attr:`opener` (``opening.FrameOpener``), :attr:`lookahead` (``frames.Lookahead``).

    Args:
        session: the segmentation session (an :class:`AnnotateSession` tracks masks and
            encodes ahead; a plain ``SegmentationSession`` carries clicks only).
        folder: the session folder.
        source: the frames (None: nothing open yet).
        carry: ``masks``, ``clicks`` or ``off`` (True: ``masks`` when the session can,
            False: ``off``).
        order: ``auto``, ``triage`` or ``source`` (``frames.FrameSequence``).
        max_range: points farther (metres, horizontally) are left out; None keeps all.
        ontology: classes and attributes (None: the shipped SemanticKITTI one, or the one the
            session file names).
        calib: KITTI calibration for the label_2 box export (None: LiDAR frame).
        import_labels: folder of existing label files (``<frame>.label``,
            ``<frame>_lidarseg.bin``) imported into frames without an autosave.
        model_thread: the thread that runs every model call (None: a new one; give the one
            the models were loaded on, as ``npiseg-annotate`` does).
    """

    def __init__(self, session: SegmentationSession, folder: str | os.PathLike,
                 source: FrameSource | None = None, *, source_path: str | list | None = None,
                 topic: str | None = None, carry: bool | str = True, order: str = "auto",
                 max_range: float | None = None, log=print, ontology: Ontology | None = None,
                 calib: KittiCalib | None = None,
                 import_labels: str | os.PathLike | None = None,
                 model_thread: ModelThread | None = None) -> None:
        self.annotation = AnnotationController(session)
        self.folder = Path(folder).expanduser().resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.carry_mode = carry_mode(carry, isinstance(session, AnnotateSession))
        self.log = log
        self.lock = threading.RLock()
        self.model_thread = model_thread or ModelThread()
        self.frames = FrameSequence(max_range, order, log)
        self.frame: Frame | None = None
        self.segment: np.ndarray | None = None  # frame.xyz with unsegmented points NaN
        self.carry_report: CarryReport | None = None
        self.error = ""               # what went wrong last (shown in the page)
        self.notice = ""              # what happened last (shown in the page)
        self.version = 0              # bumps whenever labels change
        self.frame_token = 0          # bumps whenever the cloud changes
        stored, problems = read_session_file(self.folder)
        for problem in problems:
            self.log(f"npiseg-annotate: {problem}")
        self.review = ReviewState.stored(stored, ontology, log)
        self.saver = FrameSaver(self.folder, self.review.ontology, calib, self.fail)
        self.opener = FrameOpener(
            self.annotation, self.frames, self.review, self.saver,
            import_folder=Path(import_labels).expanduser() if import_labels else None,
            carry_mode=self.carry_mode, model_thread=self.model_thread, log=log, fail=self.fail)
        self.prior_origin = ""        # where the frame's previous-mask input came from
        self.base: np.ndarray | None = None     # imported stuff classes of the frame
        self.lookahead = Lookahead(
            self.frames, session if isinstance(session, AnnotateSession) else None, self.lock,
            self.model_thread, key=lambda: (self.frame_token, self.version),
            left=self._left_frame, tracks=self.carry_mode == "masks")
        self._background: BackgroundWorker | None = None
        if source is not None:
            self.attach(source, source_path, topic)

    # ------------------------------------------------------------ what it holds
    @property
    def session(self) -> SegmentationSession:
        return self.annotation.session

    @property
    def active_object(self) -> int:
        return self.annotation.active_object

    @property
    def prediction(self) -> Prediction | None:
        return self.annotation.prediction

    @property
    def ontology(self) -> Ontology:
        return self.review.ontology

    @property
    def frame_name(self) -> str:
        return self.frames.name

    # ------------------------------------------------------------ source + session file
    def attach(self, source: FrameSource, source_path=None, topic: str | None = None) -> None:
        self.flush()
        stored, _ = read_session_file(self.folder)
        position = self.frames.open(source, source_path, topic, self.folder,
                                    (stored or {}).get("current"))
        self.goto_position(position, carry=False)

    def open_path(self, path: str, topic: str | None = None) -> None:
        """Open another source from the page; on failure keep the current one."""
        try:
            source = open_source(path, topic or None)
        except SourceError as error:
            self.fail(str(error))
            return
        self.attach(source, str(Path(path).expanduser().resolve()), topic or None)
        if not self.error:
            self.notice = f"opened {source.description} ({len(source)} frames)"

    def _write_session_file(self) -> None:
        frames = self.frames
        if frames.source is None:
            return
        try:
            write_session_file(
                self.folder, source_path=frames.source_path, topic=frames.topic,
                frames=frames.names, current=frames.name, order=frames.order_kind,
                max_range=frames.max_range, ontology=self.ontology.path,
                objects=self.review.objects, status=self.review.status)
        except (OSError, ValueError) as error:
            self.fail(f"could not write {self.folder / SESSION_FILE}: {error}")

    # ------------------------------------------------------------ navigation
    def step(self, delta: int) -> None:
        order, position = self.frames.order, self.frames.position
        if not order:
            return self.fail("no frames")
        target = min(max(position + int(delta), 0), len(order) - 1)
        if target == position and self.frame is not None:
            self.notice = "first frame" if delta < 0 else "last frame"
            return
        self.goto_position(target, carry=self.carry_mode != "off")

    def goto_index(self, index: int) -> None:
        source = self.frames.source
        if source is None or not 0 <= index < len(source):
            return self.fail(f"frame index {index} outside [0, {len(source or [])})")
        self.goto_position(self.frames.order.index(index), carry=self.carry_mode != "off")

    def goto_position(self, position: int, carry: bool, *, fresh: bool = False) -> None:
        """Open the frame at ``position``: its autosave when it has one (unless ``fresh``),
        else imported labels, else (``carry``) the frame shown until now, carried over
        (``opening.py``)."""
        previous = self._left_frame() if carry else None
        if previous is not None:  # tracked ahead on the background thread, or None
            previous.carried = self.lookahead.carried_into(self.frames.order[position])
        self.flush()  # the frame being left: its exports (in the background when running)
        self.frames.position = position
        self.error = ""
        self.frame_token += 1
        self.version += 1
        opened = self.opener.open(previous, fresh)
        self.frame, self.segment, self.base = opened.frame, opened.segment, opened.base
        self.notice, self.carry_report = opened.notice, opened.carry_report
        self.prior_origin = opened.prior_origin
        self._write_session_file()

    def _left_frame(self) -> LeftFrame | None:
        return left_frame(self.annotation, self.frame_name, self.frame, self.segment)

    # ------------------------------------------------------------ editing
    def click(self, *, point_index: int | None = None, position=None,
              background: bool = False) -> None:
        if self.frame is None:
            return self.fail("no usable frame here: go to another frame")
        try:
            click = self.annotation.click(position, point_index=point_index,
                                          object_id=BACKGROUND_ID if background else None)
        except ClickRejectedError as error:
            return self.fail(f"click rejected: {error}")
        if click.object_id != BACKGROUND_ID and click.object_id not in self.review.objects:
            self._assign(click.object_id)
        self._after_edit(f"{'background' if background else f'object {click.object_id}'} click")

    def undo(self) -> None:
        if self.frame is None:
            return self.fail("no usable frame here")
        if self.annotation.undo() is None:
            self.notice = "nothing to undo"
            return
        self._after_edit("undone")

    def reset(self) -> None:
        if self.frame is None:
            return self.fail("no usable frame here")
        self.annotation.reset()
        if isinstance(self.session, AnnotateSession):
            self.session.set_prior(None)  # a clean frame: nothing carried either
        remove_prior(self.folder, self.frame_name)
        self.prior_origin = ""
        self.annotation.select_object(1)
        self._after_edit("reset: all clicks of this frame removed")

    def new_object(self) -> None:
        """A fresh object (track) id: above every id of the drive, so never an earlier track."""
        fresh = max([self.active_object, *self.review.objects,
                     *(c.object_id for c in self.annotation.clicks)]) + 1
        if fresh > MAX_OBJECT_ID:
            return self.fail(f"no object id left (maximum {MAX_OBJECT_ID})")
        self.annotation.select_object(fresh)
        self._assign(fresh)  # here, not on the click's path
        self.notice = f"new object {fresh} ({self.review.current_class}): click on it"
        if self.frame is not None:
            self.saver.autosave_clicks(self.annotation, self.frame_name)

    def set_active(self, object_id: int) -> None:
        if not 1 <= object_id <= MAX_OBJECT_ID:
            return self.fail(f"object id {object_id} outside 1..{MAX_OBJECT_ID}")
        self.annotation.select_object(object_id)
        self.notice = f"active object {object_id}"
        if self.frame is not None:
            self.saver.autosave_clicks(self.annotation, self.frame_name)

    def _assign(self, object_id: int) -> None:
        """``object_id`` gets the class for new objects."""
        self.review.assign(object_id)
        self._write_session_file()

    def set_class(self, class_name: str, object_id: int | None = None) -> None:
        """Give ``object_id`` (default: the active object) the class ``class_name``; new
        objects get it from now on."""
        object_id = self.active_object if object_id is None else object_id
        try:
            self.review.set_class(class_name, object_id)
        except OntologyError as error:
            return self.fail(str(error))
        if object_id >= 1:
            self._write_session_file()
            self.saver.edited()
        self.notice = f"object {object_id}: {class_name}" if object_id >= 1 else \
            f"class for new objects: {class_name}"

    def set_attribute(self, name: str, value, object_id: int | None = None) -> None:
        object_id = self.active_object if object_id is None else object_id
        try:
            self.review.set_attribute(object_id, name, value)
        except ValueError as error:  # OntologyError included
            return self.fail(str(error))
        self._write_session_file()
        self.saver.edited()
        self.notice = f"object {object_id}: {name} = {value}"

    def set_status(self, status: str) -> None:
        try:
            self.review.set_status(self.frame_name, status)
        except ValueError as error:
            return self.fail(str(error))
        self._write_session_file()
        self.notice = f"frame {self.frame_name}: {status}"

    def propagate(self, frames: int) -> None:
        """Carry this frame's objects forward into the next ``frames`` frames again, replacing
        what they had (stops before an accepted frame), then come back here."""
        if self.frame is None or not self.annotation.clicks:
            return self.fail("nothing to propagate: label this frame first")
        if self.carry_mode == "off":
            return self.fail("carrying is off (--carry off)")
        start = self.frames.position
        done: list[str] = []
        for position in range(start + 1, min(start + 1 + frames, len(self.frames.order))):
            name = self.frames.name_at(position)
            if self.review.status_of(name) == "accepted":
                break
            self.goto_position(position, carry=True, fresh=True)
            if self.frame is None:
                break
            done.append(name)
        self.goto_position(start, carry=False)
        stop = "" if len(done) == frames else " (stopped at an accepted or unusable frame " \
            "or the last one)"
        self.notice = (f"propagated to {len(done)} frames: {', '.join(done[:5])}"
                       + ("..." if len(done) > 5 else "") + stop)

    def _after_edit(self, what: str) -> None:
        self.error = ""
        self.model_thread.run(self.annotation.predict)
        self.version += 1
        self.notice = what
        self.saver.autosave_clicks(self.annotation, self.frame_name)
        self.saver.edited()

    def fail(self, message: str) -> None:
        self.error = message
        self.log(f"npiseg-annotate: {message}")

    # ------------------------------------------------------------ saving
    def _snapshot(self) -> FrameExport | None:
        prediction = self.prediction
        if self.frame is None or prediction is None:
            return None
        return FrameExport(self.frame_name, self.frame.xyz, prediction.labels,
                           prediction.uncertainty, self.annotation.clicks, self.review.snapshot())

    def flush(self, *, wait: bool = False) -> None:
        """Write the current frame's exports if they are older than its labels: on the
        background thread when it runs (after what it has queued; ``wait``: until written),
        else here."""
        self.saver.flush(self._snapshot, self.base, self._background, wait=wait)

    def export_now(self) -> None:
        """Write the current frame's exports and labelled autosave now (the page's *export*)."""
        if self.frame is None or self.prediction is None:
            return self.fail("nothing to export here")
        self.saver.dirty = True
        self.flush(wait=True)
        self.saver.autosave_labels(self.annotation, self.frame_name)
        if not self.error:
            self.notice = (f"exported {len(self.saver.exported)} files of frame "
                           f"{self.frame_name}")

    # ------------------------------------------------------------ background thread
    def start_background(self) -> None:
        """Start the background thread: exports off the request path, the next frame encoded
        and tracked ahead, exports after an idle spell."""
        if self._background is None:
            self._background = BackgroundWorker(self._background_tick,
                                                lambda m: self.log(f"npiseg-annotate: {m}"))

    def stop_background(self) -> None:
        """Write what is pending, then stop the background thread."""
        with self.lock:
            if self.saver.dirty:
                self.flush(wait=True)
                self.saver.autosave_labels(self.annotation, self.frame_name)
            worker, self._background = self._background, None
        if worker is not None:  # not under the lock: its last tick may be waiting for it
            worker.stop()

    def touch(self) -> None:
        """A request arrived (the background thread waits for quiet)."""
        self.lookahead.touch()

    def _background_tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.lookahead.quiet(now):
                return
            if self.saver.idle_export_due(now):
                self.flush(wait=True)
                self.saver.autosave_labels(self.annotation, self.frame_name)
                return
            job = self.lookahead.job()
        if job is not None:
            job()

    @property
    def next_ready(self) -> bool:
        """The next frame is encoded ahead and (``masks``) the objects on screen are tracked
        into it: stepping there costs clicks and one decode."""
        return self.lookahead.ready(self.carry_mode == "masks" and self.frame is not None
                                    and bool(self.annotation.clicks))

    # ------------------------------------------------------------ what the page sees
    def state(self) -> dict:
        return view.page_state(self)

    def boxes(self) -> dict:
        """The current frame's objects' boxes (``export.fit_box``), for the page."""
        return view.boxes_json(self.frame, self.prediction, self.version)

    def cloud_bytes(self) -> bytes:
        return view.cloud_bytes(self.frame)

    def intensity_bytes(self) -> bytes:
        return view.intensity_bytes(self.frame)

    def label_bytes(self) -> bytes:
        return view.label_bytes(self.frame, self.prediction)

"""One cloud's annotation: clicks, decodes, undo, objects, autosave, resume and exports.

The ROS node's worker (``ros/worker.py``: this + a thread and a queue) and the browser tool's
workspace (``annotate/workspace.py``: this + frames and carrying clicks) both drive the
segmentation session through :class:`AnnotationController`, so there is one resume algorithm
and one new-object rule. The clicks and the exact undo are the session's own history; the
controller adds what the session does not know: which cloud it is (fingerprint, frame), after
which click counts it decoded (an autosave replays those decodes to give the same labels), the
active object, and the files.

No ROS, and PyTorch only through the session. Not thread safe: one owner calls it (the worker
thread, the browser tool's server under its lock).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npiseg_ros.core.errors import ClickRejectedError, NoCloudError, NPISegError
from npiseg_ros.core.types import BACKGROUND_ID, MAX_OBJECT_ID, CloudSummary, Prediction
from npiseg_ros.io.autosave import (AnnotationRecord, ClickRecord, cloud_fingerprint,
                                    format_from_path, recover_autosave, save_annotation,
                                    write_autosave)

__all__ = ["AnnotationController", "AnnotationState", "ResumeOutcome", "SESSION_SETTINGS"]

SESSION_SETTINGS = frozenset({"num_samples", "scene_weight", "max_click_distance",
                              "max_points"})
"""Session attributes that may change between clicks (:meth:`AnnotationController.tune`)."""


@dataclass(frozen=True)
class AnnotationState:
    """An immutable picture of the annotation after an edit (what owners publish or show).

    Attributes:
        fingerprint: :func:`~npiseg_ros.io.autosave.cloud_fingerprint` of the cloud, "" without.
        frame_id: the cloud's frame (click positions are in it).
        summary: what the session's ``set_cloud`` reported, None without a cloud.
        clicks: in the order they were made; positions in metres, cloud frame.
        active_object: id that clicks without an explicit id get (0 = background).
        prediction: the latest decode, None before the first one of this cloud.
        decoded_at: click counts after which the session decoded and whose labels the next
            decode builds on (as in :class:`~npiseg_ros.io.autosave.AnnotationRecord`).
    """

    fingerprint: str
    frame_id: str
    summary: CloudSummary | None
    clicks: tuple[ClickRecord, ...]
    active_object: int
    prediction: Prediction | None
    decoded_at: tuple[int, ...]


@dataclass(frozen=True)
class ResumeOutcome:
    """What :meth:`AnnotationController.resume` found and did.

    Attributes:
        found: an autosave of this cloud was read (possibly one with no clicks: a reset).
        saved_clicks: clicks in it.
        replayed: clicks now on the session.
        skipped: why each click that could not be replayed was left out ("click 3: ...").
        problems: unreadable autosave files moved aside, a fall-back to the generation before.
        active_object: the active object restored from it (0: none stored).
        relabelled: points whose replayed label differs from the saved one (another model or
            ``--max-range`` than when it was saved, or a skipped click); 0 without saved labels.
    """

    found: bool = False
    saved_clicks: int = 0
    replayed: int = 0
    skipped: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    active_object: int = 0
    relabelled: int = 0


class AnnotationController:
    """Annotates one cloud at a time with a ``SegmentationSession``.

    Every edit (:meth:`click`, :meth:`undo`, :meth:`reset`) changes the clicks only; the owner
    decides when to decode (:meth:`predict`: the worker once per batch of clicks, the browser
    tool after every edit) and when to write (:meth:`autosave`, :meth:`save`).

    Args:
        session: a :class:`~npiseg_ros.core.session.SegmentationSession` (or an object with its
            ``set_cloud``, ``clear``, ``add_click``, ``undo``, ``reset``, ``predict`` and
            ``clicks``).
        active_object: the id clicks without an explicit id get at first (0 = background).
    """

    def __init__(self, session, *, active_object: int = 1) -> None:
        self.session = session
        self._active = _object_id(active_object)
        self._xyz: np.ndarray | None = None
        self._fingerprint = ""
        self._frame_id = ""
        self._summary: CloudSummary | None = None
        self._forget_clicks()

    def _forget_clicks(self) -> None:
        self._prediction: Prediction | None = None
        self._decoded_at: list[int] = []
        self._issued = 0   # largest id new_object handed out since the clicks were cleared

    # ------------------------------------------------------------------ what it holds
    @property
    def has_cloud(self) -> bool:
        return self._xyz is not None

    @property
    def xyz(self) -> np.ndarray | None:
        """(N, 3) coordinates of the cloud, metres, as given to :meth:`set_cloud` (``xyz``)."""
        return self._xyz

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def frame_id(self) -> str:
        return self._frame_id

    @property
    def summary(self) -> CloudSummary | None:
        return self._summary

    @property
    def clicks(self) -> tuple[ClickRecord, ...]:
        """The session's clicks as stored in files (position, object id, snapped point)."""
        return tuple(ClickRecord(tuple(float(v) for v in click.position), int(click.object_id),
                                 int(click.point_index)) for click in self.session.clicks)

    @property
    def prediction(self) -> Prediction | None:
        """The latest decode of this cloud (None before the first); an edit does not change it
        until the next :meth:`predict`."""
        return self._prediction

    @property
    def active_object(self) -> int:
        return self._active

    @property
    def decoded_at(self) -> tuple[int, ...]:
        return tuple(self._decoded_at)

    def state(self) -> AnnotationState:
        return AnnotationState(self._fingerprint, self._frame_id, self._summary, self.clicks,
                               self._active, self._prediction, tuple(self._decoded_at))

    # ------------------------------------------------------------------ cloud
    def set_cloud(self, xyz: np.ndarray, *, colors: np.ndarray | None = None,
                  intensity: np.ndarray | None = None, frame_id: str = "",
                  segment: np.ndarray | None = None) -> CloudSummary:
        """Encode a new cloud; its clicks start empty (:meth:`resume` brings saved ones back).

        Args:
            xyz: (N, 3) float coordinates, metres: the cloud's identity (fingerprint, autosave
                name) and what :meth:`save` writes.
            colors: (N, 3) RGB in [0, 1] or uint8, or None.
            intensity: (N,) float, or None.
            frame_id: the frame of ``xyz`` and of click positions.
            segment: (N, 3) the coordinates the session segments when they differ from ``xyz``
                (rows set to NaN are left out, e.g. beyond the browser tool's ``--max-range``:
                label -1); point indices stay those of ``xyz``.

        Raises:
            InvalidCloudError (from the session): the cloud cannot be segmented; the previous
                cloud and its clicks are kept.
        """
        xyz = np.asarray(xyz)
        if segment is not None and np.shape(segment) != xyz.shape:
            raise ValueError(f"segment has shape {np.shape(segment)}, xyz {xyz.shape}")
        summary = self.session.set_cloud(xyz if segment is None else segment, colors=colors,
                                         intensity=intensity)
        self._xyz, self._fingerprint = xyz, cloud_fingerprint(xyz)
        self._frame_id, self._summary = frame_id, summary
        self._forget_clicks()
        return summary

    def clear(self) -> None:
        """Forget the cloud and its clicks (the active object stays)."""
        self.session.clear()
        self._xyz, self._fingerprint, self._frame_id, self._summary = None, "", "", None
        self._forget_clicks()

    def tune(self, **settings: float | int) -> None:
        """Change session settings between clicks (names in :data:`SESSION_SETTINGS`)."""
        unknown = set(settings) - SESSION_SETTINGS
        if unknown:
            raise ValueError(f"not a session setting: {', '.join(sorted(unknown))}; "
                             f"use {', '.join(sorted(SESSION_SETTINGS))}")
        for name, value in settings.items():
            setattr(self.session, name, value)

    # ------------------------------------------------------------------ editing
    def click(self, position=None, *, point_index: int | None = None,
              object_id: int | None = None) -> ClickRecord:
        """Add a click by position (metres, cloud frame; snapped to the nearest point) or by
        point index. ``object_id`` None: the active object (which an explicit id leaves as it
        is: the node's ``~/click`` names its object, its RViz clicks take the active one).

        Raises:
            NoCloudError: no cloud yet.
            ClickRejectedError: bad id, position or index, or too far from every point.
        """
        self._require_cloud()
        click = self.session.add_click(position, point_index=point_index,
                                       object_id=self._active if object_id is None else object_id)
        return ClickRecord(tuple(float(v) for v in click.position), int(click.object_id),
                           int(click.point_index))

    def undo(self) -> ClickRecord | None:
        """Remove the last click (None when there is none); the next :meth:`predict` gives
        exactly the prediction that followed the click before it (the session's history)."""
        if self._xyz is None:
            return None
        removed = self.session.undo()
        if removed is None:
            return None
        count = len(self.session.clicks)
        while self._decoded_at and self._decoded_at[-1] > count:
            self._decoded_at.pop()
        return ClickRecord(tuple(float(v) for v in removed.position), int(removed.object_id),
                           int(removed.point_index))

    def reset(self) -> None:
        """Remove every click of this cloud (no re-encoding); the active object stays."""
        self.session.reset()
        self._forget_clicks()

    def new_object(self) -> int:
        """A fresh object id, which becomes the active object: one above every id clicked,
        handed out since the last reset, or active, so never the object being labelled.

        Raises:
            ClickRejectedError: every id up to ``MAX_OBJECT_ID`` is taken.
        """
        used = {click.object_id for click in self.session.clicks}
        fresh = max(self._issued, self._active, *used) + 1
        if fresh > MAX_OBJECT_ID:
            raise ClickRejectedError(f"no object id left (maximum {MAX_OBJECT_ID})")
        self._issued = self._active = fresh
        return fresh

    def select_object(self, object_id: int) -> None:
        """Make ``object_id`` (0 = background, 1..MAX_OBJECT_ID) the active object."""
        self._active = _object_id(object_id)

    def predict(self) -> Prediction:
        """Decode the current clicks (the session returns its stored result when nothing
        changed since) and remember the click count for an exact replay."""
        self._require_cloud()
        prediction = self.session.predict()
        count = len(self.session.clicks)
        if count and (not self._decoded_at or self._decoded_at[-1] != count):
            self._decoded_at.append(count)
        self._prediction = prediction
        return prediction

    # ------------------------------------------------------------------ files
    def record(self, *, with_labels: bool = True) -> AnnotationRecord:
        """The autosave record: the clicks, decode boundaries, active object and (with
        ``with_labels``) the labels and uncertainty of the latest decode."""
        self._require_cloud()
        prediction = self._prediction if with_labels else None
        return AnnotationRecord(
            fingerprint=self._fingerprint, frame_id=self._frame_id, clicks=self.clicks,
            active_object=self._active,
            labels=None if prediction is None else prediction.labels,
            uncertainty=None if prediction is None else prediction.uncertainty,
            decoded_at=tuple(self._decoded_at))

    def autosave(self, directory: str | os.PathLike, *, with_labels: bool = True) -> Path:
        """Write :meth:`record` atomically into ``directory`` (named by the fingerprint).

        ``with_labels`` False writes the clicks only (~1 kB instead of ~8 bytes per point):
        :meth:`resume` replays them to the same labels; only its ``relabelled`` check needs
        the saved labels.

        Raises:
            OSError: the directory cannot be written (the annotation is kept in memory).
        """
        return write_autosave(directory, self.record(with_labels=with_labels))

    def save(self, path: str | os.PathLike, fmt: str = "") -> Path:
        """Export the latest decode: ``fmt`` ``ply``, ``label`` or ``npz`` (empty: from the
        path's extension). Returns the absolute path written.

        Raises:
            ValueError: nothing decoded yet, or an unknown format.
        """
        if self._xyz is None or self._prediction is None:
            raise ValueError("nothing to save yet: no cloud has been segmented")
        fmt = format_from_path(os.fspath(path), fmt)
        return save_annotation(path, fmt, self._xyz, self._prediction.labels,
                               self._prediction.uncertainty, self.clicks)

    def resume(self, directory: str | os.PathLike) -> ResumeOutcome:
        """Replace the clicks with the autosave of this cloud in ``directory``, if there is one.

        The clicks are replayed by point index, decoding after the same click counts as the
        session that saved them (``decoded_at``): each decode builds on the labels of the one
        before, so this gives the saved labels exactly (given the same model). A click that
        cannot be replayed (a point left out by another ``--max-range``, a damaged record) is
        skipped and said; the decodes after it are then made at the end only. Unreadable files
        are moved aside (``recover_autosave``); this never raises for a bad file.

        Raises:
            NoCloudError: no cloud yet.
        """
        self._require_cloud()
        record, problems = recover_autosave(directory, self._fingerprint)
        if record is None:
            return ResumeOutcome(problems=tuple(problems))
        self.reset()
        boundaries = {count for count in record.decoded_at if 0 < count < len(record.clicks)}
        skipped: list[str] = []
        for number, click in enumerate(record.clicks, start=1):
            try:
                self.click(point_index=click.point_index, object_id=click.object_id)
            except NPISegError as error:
                skipped.append(f"click {number}: {error}")
                continue
            if number in boundaries and not skipped:
                self.predict()
        restored = record.active_object if 0 < record.active_object <= MAX_OBJECT_ID else 0
        if restored:
            self._active = restored
        relabelled = 0
        if self.session.clicks:
            labels = self.predict().labels
            if record.labels is not None and np.shape(record.labels) == labels.shape:
                relabelled = int(np.count_nonzero(np.asarray(record.labels) != labels))
        return ResumeOutcome(True, len(record.clicks), len(self.session.clicks),
                             tuple(skipped), tuple(problems), restored, relabelled)

    def _require_cloud(self) -> None:
        if self._xyz is None:
            raise NoCloudError("no cloud yet: give a cloud (publish a PointCloud2) before "
                               "clicking")


def _object_id(value: int) -> int:
    """``value`` as an object id (0 = background), or ClickRejectedError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
            not BACKGROUND_ID <= int(value) <= MAX_OBJECT_ID:
        raise ClickRejectedError(f"object id {value!r} outside {BACKGROUND_ID}..{MAX_OBJECT_ID}")
    return int(value)

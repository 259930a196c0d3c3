"""Saving the frame on screen into the session folder.

A click, undo or reset saves the clicks only (~1 kB, atomic: a resume replays them). The
exports (``export.py``) and the autosave with labels are written from an immutable snapshot
when the user leaves the frame, after an idle spell (:data:`IDLE_EXPORT_S`), on request and at
shutdown: on the background thread when it runs, in order, so that an older snapshot of a frame
never lands last. Labels carried into (or imported for) a frame are stored with it
(``tracking.PriorRecord``) so that a resume (``opening.py``) replays its clicks on the same
previous-mask input.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from npiseg_ros.annotate.background import BackgroundWorker
from npiseg_ros.annotate.export import FrameExport, KittiCalib, export_paths, write_frame_exports
from npiseg_ros.annotate.folder import FILE_MODE, autosave_dir, shareable
from npiseg_ros.annotate.ontology import Ontology
from npiseg_ros.annotate.tracking import PriorRecord, write_prior
from npiseg_ros.annotation import AnnotationController
from npiseg_ros.io.autosave import write_autosave

__all__ = ["FrameSaver", "IDLE_EXPORT_S"]

IDLE_EXPORT_S = 2.0
"""Seconds without an edit after which the current frame's exports are written."""


class FrameSaver:
    """Writes the frame on screen into the session folder.

    Args:
        folder: the session folder.
        ontology: the classes the exports are written in.
        calib: KITTI calibration for the label_2 box export (None: LiDAR frame).
        fail: called with the message when a write fails (the tool keeps running).

    Attributes:
        dirty: the frame's exports are older than its labels.
        last_edit: ``time.monotonic()`` of the last edit.
        exported: the files of the newest snapshot's export, relative to the folder.
    """

    def __init__(self, folder: Path, ontology: Ontology, calib: KittiCalib | None,
                 fail: Callable[[str], None]) -> None:
        self.folder = folder
        self.ontology = ontology
        self.calib = calib
        self._fail = fail
        self.dirty = False
        self.last_edit = 0.0
        self.exported: list[str] = []
        # exports are written on the background thread or, when a caller must wait, on the
        # caller's thread; the write lock orders them and an older snapshot of a frame never
        # lands after a newer one of that frame (another frame's newer one does not count)
        self._write_lock = threading.Lock()
        self._snapshots = 0
        self._landed: dict[str, int] = {}  # frame -> number of the snapshot written last

    def edited(self) -> None:
        """The labels, classes or attributes changed: the exports are due."""
        self.dirty = True
        self.last_edit = time.monotonic()

    def idle_export_due(self, now: float) -> bool:
        """Edits wait for export and none came for :data:`IDLE_EXPORT_S` before ``now``."""
        return self.dirty and now - self.last_edit >= IDLE_EXPORT_S

    def autosave_clicks(self, annotation: AnnotationController, frame: str) -> None:
        """The click path's save: the clicks only (a resume replays them)."""
        try:
            shareable(annotation.autosave(autosave_dir(self.folder, frame), with_labels=False))
        except OSError as error:
            self._fail(f"could not save into {self.folder}: {error}")

    def autosave_labels(self, annotation: AnnotationController, frame: str) -> None:
        """The autosave with labels (a resume then checks the replay against them)."""
        try:
            shareable(write_autosave(autosave_dir(self.folder, frame), annotation.record()))
        except OSError as error:
            self._fail(f"could not save into {self.folder}: {error}")

    def flush(self, snapshot: Callable[[], FrameExport | None], base: np.ndarray | None,
              worker: BackgroundWorker | None, *, wait: bool = False) -> None:
        """Write the frame's exports when they are older than its labels: on ``worker`` when
        given, this is not its thread and the caller does not ``wait``, else here (waiting for
        the worker while holding the workspace's lock could deadlock).

        Args:
            snapshot: makes the frame's export snapshot (None: nothing to export).
            base: (N,) int64 imported stuff classes written where the tool has background,
                or None.
            worker: the background thread, or None.
        """
        made = snapshot() if self.dirty else None
        self.dirty = False
        if made is None:
            return

        self._snapshots += 1
        number = self._snapshots

        def write() -> None:  # never takes the workspace's lock (its caller may hold it)
            with self._write_lock:
                if number < self._landed.get(made.name, 0):
                    return  # a newer snapshot of this frame was written already
                try:
                    written = write_frame_exports(self.folder, made, self.ontology,
                                                  self.calib, mode=FILE_MODE, base=base)
                except (OSError, ValueError) as error:
                    self._fail(f"could not export frame {made.name} into {self.folder}: "
                               f"{error}")
                    return
                self._landed[made.name] = number
                if number == self._snapshots:  # not a frame left earlier, landing late
                    self.exported = [str(p.relative_to(self.folder)) for p in written]

        if worker is None or worker.on_worker_thread() or wait:
            # waiting for the background thread while holding the workspace's lock would
            # deadlock when its current job (an encode ahead) needs that lock: write here
            write()
            return
        worker.submit(write)

    def exports_current(self, frame: str) -> bool:
        """The frame's exports exist and are newer than its autosave."""
        saved = [p.stat().st_mtime for p in autosave_dir(self.folder, frame).glob("*.npz")]
        try:
            written = [p.stat().st_mtime for p in
                       export_paths(self.folder, frame, self.ontology).values()]
        except OSError:
            return False
        return not saved or min(written) >= max(saved)

    def store_prior(self, annotation: AnnotationController, frame: str, labels: np.ndarray,
                    origin: str) -> None:
        """Keep ``labels`` ((N,) int object ids carried or imported into ``frame``) as the
        previous-mask input its current clicks were made on."""
        try:
            shareable(write_prior(self.folder, frame, PriorRecord(
                annotation.fingerprint, labels, origin, len(annotation.clicks))))
        except OSError as error:
            self._fail(f"could not save into {self.folder}: {error}")

"""Opening a frame: its cloud, then what it starts with.

In this order: the frame's own autosave (its clicks replayed exactly, on the labels stored
with it as the previous-mask input), else its existing labels (``--import-labels``,
``review.py``), else the frame the user left, carried over (``carrying.py``). Clicks the tool
made (carried or imported prompts) are saved at once, so that the frame reopens with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from npiseg_ros.annotate.carrying import CarryReport, LeftFrame, carry_in
from npiseg_ros.annotate.folder import autosave_dir
from npiseg_ros.annotate.frames import FrameSequence
from npiseg_ros.annotate.model_thread import ModelThread
from npiseg_ros.annotate.review import ImportedLabels, ReviewState, find_import, read_import
from npiseg_ros.annotate.saving import FrameSaver
from npiseg_ros.annotate.session import AnnotateSession
from npiseg_ros.annotate.sources import Frame, FrameError
from npiseg_ros.annotate.tracking import deepest_points, read_prior, remove_prior
from npiseg_ros.annotation import AnnotationController
from npiseg_ros.core.errors import NPISegError

__all__ = ["FrameOpener", "Opened"]


@dataclass
class Opened:
    """What an opened frame starts with.

    Attributes:
        frame: the frame; None when it could not be opened (the reason went to ``fail``).
        segment: (N, 3) float its points as segmented (NaN rows: left out), metres.
        notice: what happened, for the page ("" when nothing to say).
        carry_report: what carrying the frame left did; None when not carried.
        prior_origin: where the labels its first decode builds on came from ("": none).
        base: (N,) int64 imported stuff classes of the frame, or None.
    """

    frame: Frame | None
    segment: np.ndarray | None
    notice: str = ""
    carry_report: CarryReport | None = None
    prior_origin: str = ""
    base: np.ndarray | None = None


class FrameOpener:
    """Opens the frame at the sequence's position into the annotation.

    Args:
        annotation: the controller (its session: an ``AnnotateSession`` takes priors and
            clouds encoded ahead).
        frames: the sequence (its position: the frame to open).
        review: the review record (imported objects' classes go there).
        saver: writes the frame's clicks and stored prior.
        import_folder: ``--import-labels`` folder, or None.
        carry_mode: ``masks``, ``clicks`` or ``off``.
        model_thread: runs every model call (``model_thread.ModelThread``).
        log: called with messages for the terminal; ``fail``: with what went wrong.
    """

    def __init__(self, annotation: AnnotationController, frames: FrameSequence,
                 review: ReviewState, saver: FrameSaver, *, import_folder: Path | None,
                 carry_mode: str, model_thread: ModelThread, log: Callable[[str], None],
                 fail: Callable[[str], None]) -> None:
        self.annotation, self.frames, self.review, self.saver = annotation, frames, review, saver
        self.import_folder = import_folder
        self.carry_mode = carry_mode
        self.model_thread = model_thread
        self.log, self.fail = log, fail

    @property
    def _prior_taker(self) -> AnnotateSession | None:
        session = self.annotation.session
        return session if isinstance(session, AnnotateSession) else None

    def open(self, previous: LeftFrame | None, fresh: bool = False) -> Opened:
        """Open the frame and decode what it starts with.

        Args:
            previous: the frame left, to carry over when the frame has nothing of its own
                (None: nothing is carried).
            fresh: ignore the frame's autosave and stored prior (propagating edits forward).
        """
        annotation, name = self.annotation, self.frames.name
        annotation.select_object(1)
        try:
            frame, segment, encoded = self.frames.read(self.frames.index)
            if self._prior_taker is not None:
                self._prior_taker.offer(encoded)
            self.model_thread.run(annotation.set_cloud, frame.xyz, segment=segment,
                                  intensity=frame.intensity, colors=frame.colors,
                                  frame_id=frame.frame_id)
        except (FrameError, NPISegError, ValueError) as error:
            annotation.clear()
            self.fail(str(error))
            return Opened(None, None)
        opened = Opened(frame, segment)
        imported = self._find_import(opened)
        resumed = not fresh and self._resume(opened)
        if not resumed:
            if fresh:
                remove_prior(self.saver.folder, name)
            if imported is not None:
                self._import(opened, imported)
            elif previous is not None:
                self._carry_in(opened, previous)
        self.model_thread.run(annotation.predict)
        if opened.carry_report is not None or (imported is not None and not resumed):
            self.saver.autosave_clicks(annotation, name)  # tool-made clicks: saved at once
            self.saver.dirty = True
        return opened

    def _resume(self, opened: Opened) -> bool:
        """Replay the frame's autosave on its stored prior; whether there was one."""
        name, annotation, session = self.frames.name, self.annotation, self._prior_taker
        prior = read_prior(self.saver.folder, name, annotation.fingerprint)
        if prior is not None and session is not None:
            session.set_prior(prior.labels)
        outcome = self.model_thread.run(annotation.resume, autosave_dir(self.saver.folder, name))
        for problem in outcome.problems:
            self.log(f"npiseg-annotate: {problem}")
        if outcome.skipped:
            self.fail(f"autosave of frame {name}: {len(outcome.skipped)} of "
                      f"{outcome.saved_clicks} clicks could not be replayed and were left out "
                      f"({'; '.join(outcome.skipped[:3])})")
        if outcome.replayed:
            opened.notice = f"resumed {outcome.replayed} clicks of frame {name}"
        if outcome.relabelled:
            message = (f"the clicks replayed with this model give labels that differ from "
                       f"the saved ones at {outcome.relabelled} points (another checkpoint or "
                       f"--max-range than when they were saved?)")
            opened.notice = f"{opened.notice}; {message}" if opened.notice else message
            self.log(f"npiseg-annotate: frame {name}: {message}")
        if outcome.found:
            opened.prior_origin = prior.origin if prior is not None else ""
            self.saver.dirty = not self.saver.exports_current(name)
        elif session is not None:
            session.set_prior(None)
        return outcome.found

    def _store_prior(self, opened: Opened, labels: np.ndarray, origin: str) -> None:
        opened.prior_origin = origin
        self.saver.store_prior(self.annotation, self.frames.name, labels, origin)

    def _carry_in(self, opened: Opened, previous: LeftFrame) -> None:
        report, labels = carry_in(self.annotation, previous, self.carry_mode, opened.segment,
                                  opened.frame.pose)
        if labels is not None:
            self._store_prior(opened, labels, f"carried from {previous.name}")
        opened.carry_report, opened.notice = report, report.message()
        if report.missed:
            self.log(f"npiseg-annotate: frame {self.frames.name}: {opened.notice}")

    def _find_import(self, opened: Opened) -> ImportedLabels | None:
        """The frame's existing labels (``--import-labels``), or None; sets the base layer."""
        if self.import_folder is None:
            return None
        path = find_import(self.import_folder, self.frames.name)
        if path is None:
            return None
        try:
            imported = read_import(path, opened.frame.xyz, self.review.ontology)
        except (OSError, ValueError) as error:
            self.fail(f"imported labels {path}: {error}")
            return None
        opened.base = imported.base
        return imported

    def _import(self, opened: Opened, imported: ImportedLabels) -> None:
        """Existing labels of the frame as objects to review: their classes, the mask as the
        previous-mask input, one click at each object's deepest point."""
        segment = opened.segment
        labels = np.where(np.isfinite(segment).all(axis=1), imported.objects, -1)
        self.review.take_classes(imported)
        if self._prior_taker is not None:
            self._prior_taker.set_prior(labels)
        prompts = deepest_points(segment, labels, sorted(imported.classes))
        for object_id, point_index in sorted(prompts.items()):
            self.annotation.click(point_index=point_index, object_id=object_id)
        self._store_prior(opened, labels, f"imported from {imported.path}")
        opened.notice = (f"imported {len(prompts)} objects from {imported.path.name}: review "
                         "them (a click corrects, g = accept)")

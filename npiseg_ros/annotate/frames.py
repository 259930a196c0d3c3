"""The frames of the open source: their order, reading one, and the next one prepared ahead.

The order is the source's, or the triage's ranking when the session folder has a
``triage.csv`` (``npiseg-annotate triage``; unranked frames follow in source order). While the
user is idle the workspace's background thread (:class:`Lookahead`) reads the next frame,
encodes it (``SegmentationSession.encode``, which leaves the cloud on screen alone) and tracks
the objects on screen into it (``carrying.track``); opening that frame then takes it
(:meth:`FrameSequence.read`; ``AnnotateSession.offer``) instead of reading and encoding again.
"""
from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from npiseg_ros.annotate.carrying import LeftFrame, track
from npiseg_ros.annotate.model_thread import ModelThread
from npiseg_ros.annotate.sources import Frame, FrameError, FrameSource, within_range
from npiseg_ros.annotate.tracking import CarriedObjects
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.core.session import EncodedCloud, SegmentationSession

__all__ = ["FrameSequence", "Ahead", "Lookahead", "read_triage_order", "QUIET_S"]

QUIET_S = 0.25
"""Seconds without a request before the background thread works (so that it does not delay a
burst of clicks)."""


def read_triage_order(path: Path, names: list[str]) -> list[int]:
    """Frame indices by triage rank (rank 1 first) from a triage CSV."""
    index_of = {name: i for i, name in enumerate(names)}
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("frame") in index_of and row.get("rank"):
                rows.append((int(row["rank"]), index_of[row["frame"]]))
    return [index for _, index in sorted(rows)]


@dataclass
class Ahead:
    """The next frame, read ahead.

    Attributes:
        index: its index in the source.
        frame: the frame, or None when it could not be read (not tried again).
        segment: (N, 3) float its points as segmented (``within_range``), metres.
        encoded: its encoding, or None (encoding failed: opening the frame tries again and
            says why).
        carried: the objects on screen tracked into it, or None.
        carried_for: the (frame token, labels version) of the labels ``carried`` comes from.
    """

    index: int
    frame: Frame | None
    segment: np.ndarray | None
    encoded: EncodedCloud | None = None
    carried: CarriedObjects | None = None
    carried_for: tuple = ()


class FrameSequence:
    """The open source's frames in the order they are annotated.

    Args:
        max_range: points farther (metres, horizontally) are left out; None keeps all.
        order: ``auto`` (the triage's when the session folder has one), ``triage`` or
            ``source``.
        log: called with messages for the terminal.

    Attributes:
        source: the frames (None: nothing open yet); ``source_path`` and ``topic`` as given.
        order: source indices in annotation order; ``position``: the open one's place in it.
        order_kind: ``triage`` or ``source`` once a source is open.
        ahead: the next frame read (and encoded, tracked) ahead, or None.
    """

    def __init__(self, max_range: float | None, order: str = "auto",
                 log: Callable[[str], None] = print) -> None:
        self.max_range = max_range or None
        self.order_kind = order
        self.log = log
        self.source: FrameSource | None = None
        self.source_path: str | list | None = None
        self.topic: str | None = None
        self.order: list[int] = []
        self.position = 0
        self.ahead: Ahead | None = None

    def open(self, source: FrameSource, source_path, topic: str | None, folder: Path,
             current: str | None) -> int:
        """Take ``source`` (closing the one before); returns the position of the frame named
        ``current`` (0 when it has none)."""
        if self.source is not None:
            self.source.close()
        self.source, self.source_path, self.topic = source, source_path, topic
        self.ahead = None
        self.order = self._frame_order(folder)
        if current not in source.names:
            return 0
        index = source.names.index(current)
        return self.order.index(index) if index in self.order else 0

    @property
    def names(self) -> list[str]:
        return [] if self.source is None else self.source.names

    @property
    def index(self) -> int:
        """The open frame's index in the source (-1: none)."""
        return self.order[self.position] if self.order else -1

    @property
    def name(self) -> str:
        return self.source.names[self.index] if self.source and self.order else ""

    def name_at(self, position: int) -> str:
        return self.source.names[self.order[position]]

    def read(self, index: int) -> tuple[Frame, np.ndarray, EncodedCloud | None]:
        """Frame ``index``, its points as segmented and its encoding when made ahead (else
        None); forgets what was read ahead.

        Raises:
            FrameError: the frame cannot be read or has no usable point.
        """
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead.index == index and ahead.frame is not None:
            return ahead.frame, ahead.segment, ahead.encoded
        frame = self.source.frame(index)
        return frame, within_range(frame.name, frame.xyz, self.max_range), None

    def read_next(self) -> Ahead | None:
        """The next frame, read for encoding ahead (not yet kept in :attr:`ahead`: the caller
        keeps it once encoded); None when there is none, it is ahead already, or it cannot be
        read (then remembered, so that it is not tried again)."""
        if self.source is None or self.position + 1 >= len(self.order):
            return None
        index = self.order[self.position + 1]
        if self.ahead is not None and self.ahead.index == index:
            return None
        try:
            frame = self.source.frame(index)
            segment = within_range(frame.name, frame.xyz, self.max_range)
        except (FrameError, ValueError):
            self.ahead = Ahead(index, None, None)
            return None
        return Ahead(index, frame, segment)

    def _frame_order(self, folder: Path) -> list[int]:
        indices = list(range(len(self.source)))
        triage = folder / "triage.csv"
        if self.order_kind in ("auto", "triage") and triage.is_file():
            try:
                ranked = read_triage_order(triage, self.source.names)
            except (OSError, ValueError, KeyError) as error:
                self.log(f"npiseg-annotate: ignoring {triage}: {error}")
                ranked = []
            if ranked:
                self.order_kind = "triage"
                return ranked + [i for i in indices if i not in set(ranked)]
        if self.order_kind == "triage":
            self.log("npiseg-annotate: no usable triage.csv in the session folder; source order")
        self.order_kind = "source"
        return indices


class Lookahead:
    """The background thread's work while the user is idle: encode the next frame, then track
    the objects on screen into it, so that stepping there costs clicks and one decode.

    Args:
        frames: the sequence whose :attr:`~FrameSequence.ahead` this fills.
        session: encodes the next frame; None: nothing is encoded ahead (only an
            ``AnnotateSession`` adopts what was).
        lock: the workspace's lock (its state); ``model_thread``: runs the model
            (``model_thread.ModelThread``).
        key: (frame token, labels version) on screen: the token changes with the cloud, the
            version with its labels.
        left: the frame on screen as carrying needs it (None: nothing to track).
        tracks: objects are tracked (``--carry masks``).
    """

    def __init__(self, frames: FrameSequence, session: SegmentationSession | None,
                 lock: threading.RLock, model_thread: ModelThread, *,
                 key: Callable[[], tuple[int, int]], left: Callable[[], LeftFrame | None],
                 tracks: bool) -> None:
        self.frames, self.session = frames, session
        self.lock, self.model_thread = lock, model_thread
        self.key, self.left, self.tracks = key, left, tracks
        self.last_request = 0.0  # time.monotonic()

    def touch(self) -> None:
        """A request arrived: the work waits for :data:`QUIET_S` without one."""
        self.last_request = time.monotonic()

    def quiet(self, now: float | None = None) -> bool:
        """No request came for :data:`QUIET_S` before ``now`` (default: now)."""
        return (time.monotonic() if now is None else now) - self.last_request >= QUIET_S

    def job(self) -> Callable[[], None] | None:
        """The next piece of work (asked under :attr:`lock`, run outside it), or None."""
        return self._encode_job() or self._track_job()

    def carried_into(self, index: int) -> CarriedObjects | None:
        """The objects on screen tracked ahead into frame ``index`` from the labels on screen
        now, or None."""
        ahead = self.frames.ahead
        if ahead is None or ahead.index != index or ahead.carried_for != self.key():
            return None
        return ahead.carried

    def ready(self, needs_tracking: bool) -> bool:
        """The next frame is encoded ahead and, when ``needs_tracking``, the objects on screen
        are tracked into it."""
        frames, ahead = self.frames, self.frames.ahead
        if (ahead is None or ahead.encoded is None or frames.position + 1 >= len(frames.order)
                or ahead.index != frames.order[frames.position + 1]):
            return False
        return not needs_tracking or ahead.carried_for == self.key()

    def _encode_job(self) -> Callable[[], None] | None:
        """Read the next frame here (under the lock); the job encodes it on the model thread."""
        if self.session is None:
            return None
        ahead, token = self.frames.read_next(), self.key()[0]
        if ahead is None:
            return None

        def encode() -> None:
            if not self.quiet():
                return
            try:
                ahead.encoded = self.model_thread.run(
                    self.session.encode, ahead.segment, ahead.frame.colors,
                    ahead.frame.intensity)
            except (NPISegError, ValueError):
                pass  # opening the frame encodes it again and says why
            with self.lock:
                if self.key()[0] == token:
                    self.frames.ahead = ahead
        return encode

    def _track_job(self) -> Callable[[], None] | None:
        """Track the objects on screen into the next frame read ahead (numpy, no torch); None
        when done or not needed."""
        ahead, key = self.frames.ahead, self.key()
        if not self.tracks or ahead is None or ahead.frame is None or ahead.carried_for == key:
            return None
        previous = self.left()
        if previous is None or previous.labels is None:
            return None

        def track_ahead() -> None:
            carried = track(previous, ahead.segment, ahead.frame.pose)
            with self.lock:
                if self.key() == key and self.frames.ahead is ahead:
                    ahead.carried, ahead.carried_for = carried, key
        return track_ahead

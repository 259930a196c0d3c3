"""The worker's contract with the node: what goes in, what comes out, how it is configured.

:class:`ClickRequest` is what the node queues (:meth:`AnnotationWorker.submit_click
<npiseg_ros.ros.worker.AnnotationWorker.submit_click>`), :class:`Command` what the worker's
service methods queue (answered with a :data:`Reply`); :class:`Snapshot` and
:class:`SweepAnswer` are what it publishes; :class:`WorkerEvents` is how the worker reports
(the node implements it); :class:`WorkerOptions` are the node's parameters the worker follows.
No rclpy: the tests build these without a ROS graph.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from npiseg_ros.annotation import ResumeOutcome
from npiseg_ros.annotation.follow import EGO_FALLBACKS, Answer
from npiseg_ros.core.types import CloudSummary, Prediction
from npiseg_ros.io.autosave import FORMATS, ClickRecord

__all__ = ["ClickRequest", "Command", "Refused", "Reply", "Snapshot", "SweepAnswer",
           "WorkerEvents", "WorkerOptions", "CLOUD_POLICIES", "SAVE_POLICIES"]

CLOUD_POLICIES = ("latch", "follow")
SAVE_POLICIES = ("never", "clicks", "cloud")
"""When the worker writes the labels by itself (``save_every``): never (only on request),
every ``save_every_clicks`` clicks, or for the cloud being left when the annotated cloud
changes (follow: every encode)."""

Reply = tuple[Any, str | None]
"""(result, None) or (None, reason) of a command."""


class Refused(Exception):
    """A command that cannot run now; the message is the reply."""


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


@dataclass
class Command:
    """A request the worker thread runs in order with the clicks (undo, reset, new_object,
    save, configure); the caller waits on ``done`` and reads ``result`` or ``error``."""

    name: str
    run: Callable[[], tuple[Any, bool]]    # -> (result, whether the annotation changed)
    needs_decode: bool = False             # run on the decode of the clicks before it
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: str | None = None


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

    @classmethod
    def of(cls, cloud: Any, answer: Answer) -> SweepAnswer:
        """The node's form of the carrying thread's :class:`~npiseg_ros.annotation.follow.Answer`
        for ``cloud``: plain floats and click records, the points per object counted."""
        labels = answer.labels
        counts = np.bincount(labels[labels > 0]) if (labels > 0).any() else np.zeros(0, int)
        clicks = tuple(ClickRecord(tuple(float(v) for v in position), int(object_id), -1)
                       for position, object_id in answer.clicks)
        suggestion = (None if answer.suggestion is None
                      else tuple(float(v) for v in answer.suggestion))
        return cls(cloud, labels, answer.uncertainty, clicks,
                   {int(i): int(n) for i, n in enumerate(counts) if n}, suggestion,
                   answer.carried, answer.carry_ms)


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
    sweep, encoding the newest when free, see :mod:`npiseg_ros.ros.worker`);
    ``autosave_directory``: inside ``output_directory`` (relative: under it; empty: no
    autosave of the clicks); ``resume``: replay the autosave of a cloud seen before;
    ``ego_fallback``: the ego motion between sweeps without tf
    (:data:`~npiseg_ros.annotation.follow.EGO_FALLBACKS`); ``save_every``
    (:data:`SAVE_POLICIES`), ``save_every_clicks`` and ``save_format``: when and how the labels
    are written without a request (under ``labels/`` of the autosave directory)."""

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

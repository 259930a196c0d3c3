"""``/diagnostics``: the node's health as one ``diagnostic_msgs/DiagnosticStatus``, once a second.

What a robot's monitoring (``rqt_robot_monitor``, ``diagnostic_aggregator``) shows for the node:
the model, the measured cloud rate, decode times, the click queue, the follow mode's sweep
counts, and a level with its reason:

- ERROR: every cloud received in the last :data:`WINDOW_S` seconds was rejected (the input is
  unusable: the reason of the last rejection is the message);
- WARN: no cloud received yet; in follow mode no sweep for :data:`STALE_S` seconds, or more than
  half of the sweeps of the window dropped (the node cannot keep up); :data:`QUEUE_WARN` or more
  clicks waiting for the decoder;
- OK otherwise.

:class:`NodeHealth` collects what the callbacks see (thread-safe); :meth:`NodeHealth.report`
turns it, with what the node reads from its worker, into a :class:`Health` (plain values,
testable without ROS); :func:`diagnostic_array` builds the message. Times are
``time.monotonic()`` seconds.
"""
from __future__ import annotations

import statistics
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from npiseg_ros.annotation.stream import StreamStats

__all__ = ["OK", "WARN", "ERROR", "WINDOW_S", "STALE_S", "QUEUE_WARN", "DIAGNOSTICS_TOPIC",
           "Health", "NodeHealth", "model_name", "diagnostic_array"]

OK, WARN, ERROR = 0, 1, 2
"""Levels, as ``DiagnosticStatus.OK`` / ``WARN`` / ``ERROR`` (bytes there)."""
DIAGNOSTICS_TOPIC = "/diagnostics"
"""Absolute on purpose: the aggregator and monitors listen there whatever the node's namespace
(ROS convention, as diagnostic_updater)."""
WINDOW_S = 10.0
"""Seconds over which the cloud rate, rejections and dropped sweeps are measured."""
STALE_S = 5.0
"""Follow mode: no sweep for this long is a warning (a latched cloud never goes stale)."""
QUEUE_WARN = 10
"""Clicks waiting for the decoder from which the node warns that it is behind."""
_DECODES_KEPT = 50


@dataclass(frozen=True)
class Health:
    """One report: ``level`` (:data:`OK`, :data:`WARN`, :data:`ERROR`), a one-line ``message``
    and ``values``, (key, text) pairs in display order."""

    level: int
    message: str
    values: tuple[tuple[str, str], ...]


def model_name(checkpoints: dict[str, str | Path], role: str) -> str:
    """The checkpoint's file name without suffix for ``role`` (``default`` / ``rgb``), the
    default model's when ``role`` has none; ``untrained`` when no checkpoint was loaded."""
    path = checkpoints.get(role) or checkpoints.get("default")
    return Path(path).stem if path else "untrained"


class NodeHealth:
    """What the node's callbacks saw: cloud arrivals and rejections, decode times.

    Args:
        cloud_topic: the resolved input topic (named in messages).
        window_s: see :data:`WINDOW_S`.
    """

    def __init__(self, cloud_topic: str, window_s: float = WINDOW_S) -> None:
        self.cloud_topic = cloud_topic
        self.window_s = window_s
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()       # cloud arrival times within the window
        self._rejections: deque[float] = deque()     # rejection times within the window
        self._received = self._rejected = 0
        self._last_rejection = ""
        self._decode_ms: deque[float] = deque(maxlen=_DECODES_KEPT)
        self._sweeps: deque[tuple[float, int, int]] = deque()  # (time, received, dropped)

    def cloud_received(self, now_s: float) -> None:
        """A PointCloud2 arrived (before it is decoded or checked)."""
        with self._lock:
            self._arrivals.append(now_s)
            self._received += 1
            self._forget(now_s)

    def cloud_rejected(self, now_s: float, reason: str) -> None:
        """The cloud that arrived last was refused, for ``reason``."""
        with self._lock:
            self._rejections.append(now_s)
            self._rejected += 1
            self._last_rejection = reason
            self._forget(now_s)

    def decoded(self, decode_ms: float) -> None:
        """A decode (click -> labels) took ``decode_ms`` milliseconds."""
        with self._lock:
            self._decode_ms.append(float(decode_ms))

    def _forget(self, now_s: float) -> None:
        for times in (self._arrivals, self._rejections):
            while times and times[0] < now_s - self.window_s:
                times.popleft()
        while self._sweeps and self._sweeps[0][0] < now_s - self.window_s:
            self._sweeps.popleft()

    def cloud_rate_hz(self, now_s: float) -> float:
        """Clouds per second over the window (0 with fewer than two arrivals in it)."""
        with self._lock:
            self._forget(now_s)
            if len(self._arrivals) < 2:
                return 0.0
            span = self._arrivals[-1] - self._arrivals[0]
            return (len(self._arrivals) - 1) / span if span > 0 else 0.0

    def report(self, now_s: float, *, model: str, role: str, cloud_policy: str,
               queue_depth: int, encode_ms: float | None,
               stream: StreamStats | None) -> Health:
        """The health now.

        Args:
            model: name of the model serving the current cloud (:func:`model_name`).
            role: ``default`` / ``rgb``, empty before the first cloud.
            cloud_policy: ``latch`` / ``follow``.
            queue_depth: clicks received, not yet taken by the worker.
            encode_ms: the last encode, milliseconds; None before the first.
            stream: follow mode's sweep counts (None in latch mode).
        """
        rate = self.cloud_rate_hz(now_s)
        with self._lock:
            if stream is not None:
                self._sweeps.append((now_s, stream.received, stream.dropped))
            self._forget(now_s)
            arrivals, rejections = len(self._arrivals), len(self._rejections)
            last_arrival = self._arrivals[-1] if self._arrivals else None
            received, rejected, reason = self._received, self._rejected, self._last_rejection
            decodes = list(self._decode_ms)
            first_sweeps = self._sweeps[0] if self._sweeps else None

        values = [("model", model), ("model role", role or "none yet"),
                  ("cloud topic", self.cloud_topic), ("cloud policy", cloud_policy),
                  ("cloud rate (Hz)", f"{rate:.2f}"), ("clouds received", str(received)),
                  ("clouds rejected", str(rejected)),
                  ("decode time last (ms)", f"{decodes[-1]:.1f}" if decodes else "none yet"),
                  ("decode time median (ms)",
                   f"{statistics.median(decodes):.1f}" if decodes else "none yet"),
                  ("encode time last (ms)", "none yet" if encode_ms is None
                   else f"{encode_ms:.1f}"),
                  ("queue depth (clicks waiting)", str(queue_depth))]
        dropped_in_window = taken_in_window = 0
        if stream is not None:
            values += [("sweeps received", str(stream.received)),
                       ("sweeps answered", str(stream.answered)),
                       ("sweeps carried", str(stream.carried)),
                       ("sweeps encoded", str(stream.encoded)),
                       ("sweeps dropped", str(stream.dropped)),
                       ("sweeps unanswered", str(stream.unanswered))]
            if first_sweeps is not None:
                taken_in_window = stream.received - first_sweeps[1]
                dropped_in_window = stream.dropped - first_sweeps[2]

        problems: list[tuple[int, str]] = []
        if arrivals and rejections >= arrivals:
            problems.append((ERROR, f"every cloud of the last {self.window_s:.0f} s was "
                                    f"rejected: {reason}"))
        if not received:
            problems.append((WARN, f"waiting for a cloud on {self.cloud_topic}"))
        elif cloud_policy == "follow" and (last_arrival is None or
                                           now_s - last_arrival > STALE_S):
            problems.append((WARN, f"no sweep on {self.cloud_topic} for more than "
                                   f"{STALE_S:.0f} s"))
        if taken_in_window > 0 and 2 * dropped_in_window > taken_in_window:
            problems.append((WARN, f"{dropped_in_window} of {taken_in_window} sweeps of the last "
                                   f"{self.window_s:.0f} s dropped: the node cannot keep up"))
        if queue_depth >= QUEUE_WARN:
            problems.append((WARN, f"{queue_depth} clicks waiting for the decoder"))
        if not problems:
            return Health(OK, f"{cloud_policy}: {rate:.1f} Hz, model {model}", tuple(values))
        level = max(level for level, _ in problems)
        message = "; ".join(text for found, text in problems if found == level)
        return Health(level, message, tuple(values))


def diagnostic_array(health: Health, name: str, hardware_id: str, stamp: Time) -> DiagnosticArray:
    """The ``/diagnostics`` message holding ``health`` as one status.

    Args:
        name: the status name (``"<node's full name>: segmentation"``).
        hardware_id: what runs the model (``cpu``, ``cuda:0``).
        stamp: ROS time of the report.
    """
    status = DiagnosticStatus(level=bytes([health.level]), name=name, message=health.message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=value)
                                      for key, value in health.values])
    return DiagnosticArray(header=Header(stamp=stamp), status=[status])

"""Answer every sweep of a followed stream: a thread that carries labels and reports answers.

The ROS node's follow mode (``cloud_policy: follow``) has two threads doing the work:

* the worker (``ros/worker.py``) runs every PyTorch call: it encodes the newest sweep each time
  the last encode is done, re-applies the clicks there, decodes, and hands the decode here
  (:meth:`SweepStream.decoded`, through :class:`~.follow_mode.FollowMode`), which makes it the
  :class:`~.follow.Follower`'s reference;
* this thread (numpy and scipy only) answers every other sweep: it labels the newest sweep
  received from the reference (:meth:`~.follow.Follower.carry`) and reports it. A sweep that
  arrives while it is busy replaces the one waiting (counted as dropped).

So carrying never delays a click (the worker only waits for its own decode) and the answers
come out in stamp order from one thread: a decode of an older sweep than the one on screen is
not shown; the sweep on screen is answered again from the new reference instead.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from npiseg_ros.annotation.follow import Answer, Follower

__all__ = ["SweepStream", "StreamStats", "stamp_seconds", "time_seconds"]

log = logging.getLogger(__name__)

RECENT_ANSWERS = 8
"""Answers kept (~0.8 s at 10 Hz): the worker needs the one of the sweep it encodes, and a
click names the sweep it was made on by its stamp (a viewer shows a sweep a little late)."""


def time_seconds(stamp: Any) -> float:
    """A ``builtin_interfaces/Time`` (anything with ``sec`` / ``nanosec``) in seconds; 0 for
    None."""
    if stamp is None:
        return 0.0
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def stamp_seconds(cloud: Any) -> float:
    """The header stamp of ``cloud`` (its ``stamp`` attribute) in seconds; 0 without one."""
    return time_seconds(getattr(cloud, "stamp", None))


@dataclass(frozen=True)
class StreamStats:
    """Counts since the stream started.

    Attributes:
        received: sweeps offered.
        answered: answers reported (a sweep answered again after a decode counts twice).
        carried: answers carried from a reference (the others are decodes).
        dropped: sweeps replaced by a newer one before they were carried.
        unanswered: sweeps taken before there was any reference (nothing to carry yet).
        encoded: sweeps the worker encoded (:meth:`SweepStream.note_encoded`).
        last_carry_ms: time of the latest carry, milliseconds.
    """

    received: int = 0
    answered: int = 0
    carried: int = 0
    dropped: int = 0
    unanswered: int = 0
    encoded: int = 0
    last_carry_ms: float = 0.0


class SweepStream:
    """The carrying thread of a followed stream.

    Args:
        follower: holds the reference; carries.
        report: called on this thread with (cloud, :class:`~.follow.Answer`) for every answer.
        pose_of: (cloud) -> (4, 4) fixed <- sensor at the cloud's stamp, or None (tf missing);
            may wait a bounded time for tf.
    """

    def __init__(self, follower: Follower, report: Callable[[Any, Answer], None],
                 pose_of: Callable[[Any], np.ndarray | None] | None = None) -> None:
        self.follower = follower
        self._report = report
        self._pose_of = pose_of or (lambda cloud: None)
        self._wake = threading.Condition()
        self._waiting = None                    # newest sweep not yet carried
        self._decoded: tuple[Any, Answer] | None = None
        self._shown: tuple[Any, Answer] | None = None
        self._recent: deque[tuple[Any, Answer]] = deque(maxlen=RECENT_ANSWERS)
        self._stats = StreamStats()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="npiseg-follow", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ any thread
    @property
    def stats(self) -> StreamStats:
        with self._wake:
            return self._stats

    @property
    def shown(self) -> Any:
        """The cloud answered last (what a viewer shows), None before the first answer."""
        with self._wake:
            return None if self._shown is None else self._shown[0]

    def offer(self, cloud) -> None:
        """A new sweep (the driver's rate); replaces one still waiting."""
        with self._wake:
            dropped = int(self._waiting is not None)
            self._waiting = cloud
            self._count(received=1, dropped=dropped)
            self._wake.notify()

    def decoded(self, cloud, answer: Answer) -> None:
        """The worker decoded ``cloud`` (``answer``: the reference's own); shown next."""
        with self._wake:
            self._decoded = (cloud, answer)
            self._wake.notify()

    def note_encoded(self) -> None:
        """The worker encoded one of the sweeps (for :attr:`stats`)."""
        with self._wake:
            self._count(encoded=1)

    def clear(self) -> None:
        """Forget the reference, the sweep waiting and the one shown (policy left)."""
        with self._wake:
            self._waiting, self._decoded, self._shown = None, None, None
            self._recent.clear()
            self.follower.clear()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=10.0)

    def answer_for(self, cloud, reference: int) -> Answer | None:
        """``cloud``'s answer carried from the reference ``reference`` (a token): the one
        already reported, else carried now on the calling thread (None without reference)."""
        with self._wake:
            for seen, answer in self._recent:
                if seen is cloud and answer.reference == reference and answer.carried:
                    return answer
        return self._carry(cloud)

    def answered_at(self, seconds: float, tolerance: float = 1e-6) -> Any:
        """The answered sweep stamped ``seconds`` (among the recent ones), None if none."""
        with self._wake:
            for seen, _ in reversed(self._recent):
                if abs(stamp_seconds(seen) - seconds) <= tolerance:
                    return seen
        return None

    def answer_of(self, cloud) -> Answer | None:
        """The latest answer reported for ``cloud`` (None when it was not answered)."""
        with self._wake:
            for seen, answer in reversed(self._recent):
                if seen is cloud:
                    return answer
        return None

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._decoded is not None
                                    or self._waiting is not None)
                if self._stopping:
                    return
                decoded, self._decoded = self._decoded, None
                sweep, self._waiting = self._waiting, None
                shown = self._shown
            try:
                if decoded is not None:
                    cloud, answer = decoded
                    if shown is None or stamp_seconds(shown[0]) <= stamp_seconds(cloud):
                        self._publish(cloud, answer)
                        if sweep is cloud:
                            sweep = None   # just answered by its decode
                    elif sweep is None:
                        sweep = shown[0]   # a newer sweep is on screen: answer it again
                if sweep is not None:
                    answer = self._carry(sweep)
                    if answer is None:
                        self._count(unanswered=1)
                    else:
                        self._publish(sweep, answer)
            except Exception:   # keep following whatever one sweep did
                log.exception("unexpected error while carrying a sweep")

    def _carry(self, cloud) -> Answer | None:
        if self.follower.reference is None:
            return None
        return self.follower.carry(cloud.xyz, stamp_seconds(cloud), self._pose_of(cloud))

    def _publish(self, cloud, answer: Answer) -> None:
        with self._wake:
            if self._shown is not None and stamp_seconds(cloud) < stamp_seconds(self._shown[0]):
                return   # never go back in time on screen (an older sweep carried late)
            self._shown = (cloud, answer)
            self._recent.append((cloud, answer))
            self._count(answered=1, carried=int(answer.carried))
            if answer.carried:
                self._stats = dataclasses.replace(self._stats, last_carry_ms=answer.carry_ms)
        self._report(cloud, answer)

    def _count(self, **increments: int) -> None:
        values = {name: getattr(self._stats, name) + value for name, value in increments.items()}
        self._stats = dataclasses.replace(self._stats, **values)

"""The browser tool's one background thread: file writes and encoding the next frame.

Work that must not delay a click runs here, in order: the exports of a frame the user has
left (written from an immutable snapshot), and, whenever the workspace is quiet, its
``background_tick`` (export the current frame after an idle spell, encode the next frame
ahead). PyTorch work on this thread takes the workspace's ``torch_lock``, as the request
threads' decodes do, so that two threads never run the model at once.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

__all__ = ["BackgroundWorker"]

_STOP = object()


class BackgroundWorker:
    """One daemon thread running submitted jobs in order, and ``tick`` every ``period_s``
    while nothing is queued.

    Args:
        tick: called on the worker thread when the queue is empty (the workspace's checks).
        report: called with a message when a job raises (the job's error is not re-raised:
            the thread keeps serving).
        period_s: seconds between ticks.
    """

    def __init__(self, tick: Callable[[], None], report: Callable[[str], None],
                 period_s: float = 0.05) -> None:
        self._tick = tick
        self._report = report
        self._period = period_s
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="npiseg-annotate-background",
                                        daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the worker thread after the jobs already queued."""
        with self._done:
            self._pending += 1
        self._queue.put(job)

    def on_worker_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has run; whether it did within ``timeout``."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the queued jobs, then end the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as error:  # keep the thread alive; say what failed
            self._report(f"background work failed: {error!r}")

    def _loop(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self._period)
            except queue.Empty:
                self._run(self._tick)
                continue
            if job is _STOP:
                return
            self._run(job)
            with self._done:
                self._pending -= 1
                self._done.notify_all()

"""The node process's entry point: SIGINT and SIGTERM are taken before anything heavy is imported.

Every way of starting the node reaches :func:`main` first: ``bin/segment_node`` (what ``ros2 run``
and ``ros2 launch`` execute), the ``npiseg-segment-node`` console script and ``python -m
npiseg_ros.ros.node``. :func:`main` blocks the two signals in the main thread before it imports
torch and rclpy (seconds), so every thread started later (PyTorch's, the DDS threads, the
executor, the worker) inherits the block: a signal sent at any moment stays pending until the
main thread takes it with ``sigtimedwait``. Before, one could raise KeyboardInterrupt inside
``import torch``, or kill the process by its default action once Python, finalising, had put
that action back. ``bin/segment_node`` blocks them before the interpreter even starts (GNU
``env --block-signal``), closing the ~0.1-0.5 s the interpreter needs to get here.

What a signal does, by phase:

- start-up, imports (torch, rclpy: the longest part): the process exits 0 at once (nothing has
  started that needs stopping);
- start-up, ROS initialised and the models loading: that finishes, then the process exits 0
  without starting to spin (an abrupt exit there would leave the DDS participant's shared
  memory behind);
- running: the node stops taking input, the worker applies what it had already received (its
  autosave written), the node is destroyed, exit 0;
- shutdown: nothing. ``ros2 launch`` forwards Ctrl-C after the terminal's and sends SIGTERM
  5 s later; neither interrupts the shutdown (only SIGKILL, launch's last resort, does).

Exit 2: the node could not start (missing checkpoint, bad configuration), reason on stderr.
Exit 1: the executor stopped on its own (an error, printed). A native crash (SIGSEGV...)
prints the Python stack of every thread first (``faulthandler``).

Standard library only at module level: importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["SHUTDOWN_SIGNALS", "ShutdownSignals", "main"]

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownSignals:
    """SIGINT / SIGTERM of this process, taken synchronously by the main thread.

    Attributes:
        received: the signal numbers taken so far, in arrival order.
    """

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> ShutdownSignals:
        """Block the signals in this thread (and so in every thread it starts from now on);
        call it from the main thread before any other thread exists."""
        # A thread started before this call (by a program that embeds the node) still takes a
        # signal; Python then runs this handler in the main thread: recorded, no
        # KeyboardInterrupt.
        for number in SHUTDOWN_SIGNALS:
            signal.signal(number, self._record)
        signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        return self

    def _record(self, number: int, frame) -> None:
        self.received.append(number)

    @property
    def requested(self) -> bool:
        """Whether a shutdown signal has arrived."""
        return bool(self.received)

    @property
    def first_name(self) -> str:
        """Name of the first signal taken (``SIGINT``), empty before any."""
        return signal.Signals(self.received[0]).name if self.received else ""

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds (0: just look) for a signal; whether one arrived.

        Wakes at once on a pending signal; a signal recorded by the handler is noticed when
        the timeout ends."""
        if not self.received:
            taken = signal.sigtimedwait(SHUTDOWN_SIGNALS, timeout_s)
            if taken is not None:
                self.received.append(taken.si_signo)
        return self.requested

    @contextlib.contextmanager
    def exit_at_once(self, what: str) -> Iterator[None]:
        """While inside, a signal ends the process at once with exit code 0, saying it stopped
        during ``what``; use it only where nothing needs stopping. A signal that arrives as
        the block ends is kept for :meth:`wait`."""
        done, lock = threading.Event(), threading.Lock()

        def watch() -> None:
            while not done.is_set():
                taken = signal.sigtimedwait(SHUTDOWN_SIGNALS, 0.1)
                if taken is None:
                    continue
                with lock:
                    if done.is_set():  # the block has just ended: the main thread handles it
                        self.received.append(taken.si_signo)
                        return
                    print(f"npiseg node: {signal.Signals(taken.si_signo).name} during {what}, "
                          "not started", file=sys.stderr, flush=True)
                    os._exit(0)

        watcher = threading.Thread(target=watch, name="npiseg-startup-signals", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            with lock:
                done.set()
            watcher.join()

    def ignore_further(self) -> None:
        """From now on the signals do nothing (pending ones are discarded): the shutdown under
        way cannot be interrupted. Python's finalisation gives every signal it has a handler
        for its default action (terminate) back; an ignored signal stays ignored."""
        for number in SHUTDOWN_SIGNALS:
            signal.signal(number, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """Console entry point of the node: runs until SIGINT or SIGTERM, then returns 0.

    Args:
        argv: the command line for rclpy (``--ros-args ...``); None: ``sys.argv``.
    """
    # A native crash (SIGSEGV, SIGABRT...) then leaves the Python stack of every thread in
    # the node's log: the one the fuzzing saw once (issue 21) left nothing to go on.
    faulthandler.enable()
    signals = ShutdownSignals().install()
    with signals.exit_at_once("the imports"):
        from npiseg_ros.ros import node  # torch, rclpy, the models' code: seconds

    if signals.wait(0):
        signals.ignore_further()
        print(f"npiseg node: {signals.first_name} during start-up, not started", file=sys.stderr)
        return 0
    return node.run(signals, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())

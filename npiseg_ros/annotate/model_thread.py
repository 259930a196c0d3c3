"""The browser tool's model thread: every PyTorch call of the tool runs on one long-lived thread.

Why one thread: libgomp keeps one team of OpenMP threads per thread that enters a parallel
region. A decode on each HTTP request's own (new) thread built a new team per click, and two
long-lived callers (request threads and the background encoder) make libgomp stop spinning
between parallel regions (more threads than cores), so each of a decode's hundreds of short
parallel regions then waits for its threads to wake (``docs/annotate.md``, "Speed"). Running
all model work here also serialises it, which is what the former ``torch_lock`` did.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

__all__ = ["ModelThread"]

T = TypeVar("T")


class ModelThread:
    """One worker thread that runs submitted model calls one at a time, in order.

    ``run`` blocks the caller until its call has run and returns its result or re-raises its
    exception, so the callers keep their synchronous code; a call made from the model thread
    itself runs at once (no deadlock when a job calls back).
    """

    def __init__(self, name: str = "npiseg-annotate-model") -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        # the worker's identity, learned by its first job
        self._ident = self._executor.submit(threading.get_ident).result()

    def on_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def run(self, call: Callable[..., T], *args, **kwargs) -> T:
        """``call(*args, **kwargs)`` on the model thread; its result, or its exception."""
        if self.on_thread():
            return call(*args, **kwargs)
        return self._executor.submit(call, *args, **kwargs).result()

    def close(self) -> None:
        """Finish the calls already submitted, then end the thread."""
        self._executor.shutdown(wait=True)

"""The worker's files: the clicks' autosave (written after each edit, read back for a cloud
seen before), requested exports and the ``save_every`` labels.

Every file goes inside ``output_directory`` (untrusted paths are resolved there,
:mod:`npiseg_ros.ros.paths`) and is counted against the output cap (``max_output_mb``,
:class:`~npiseg_ros.annotation.storage.OutputBudget`). A write that fails is reported through
:meth:`WorkerEvents.on_rejected <npiseg_ros.ros.worker_types.WorkerEvents.on_rejected>` and the
annotation goes on in memory. No rclpy; the worker thread is the only caller.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from npiseg_ros.annotation import AnnotationController
from npiseg_ros.annotation.storage import OutputBudget
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.io.autosave import autosave_path, check_writable, previous_path
from npiseg_ros.ros import paths
from npiseg_ros.ros.worker_types import WorkerEvents, WorkerOptions

__all__ = ["OutputFiles"]


class OutputFiles:
    """The worker's writes into one output directory, under a size cap (worker thread only).

    Args:
        output_directory: the only directory tree written to; ``autosave_directory`` and the
            paths of requests are resolved inside it.
        max_output_mb: cap on the files written there (10^6 bytes; the oldest are removed
            first); 0 = no cap.
        options: returns the worker's current :class:`WorkerOptions` (``autosave_directory``,
            ``save_every``, ``save_every_clicks``, ``save_format``).
        events: where write failures and removed files are reported.
    """

    def __init__(self, output_directory: str, max_output_mb: float,
                 options: Callable[[], WorkerOptions], events: WorkerEvents) -> None:
        if max_output_mb < 0:
            raise ValueError(f"max_output_mb must be >= 0, got {max_output_mb}")
        self.root = paths.output_root(output_directory)
        self._budget = OutputBudget(self.root, int(max_output_mb * 1e6))
        self._options = options
        self._events = events
        self._clicks_since_save = 0

    def autosave_directory(self) -> Path | None:
        """The resolved autosave directory, None when autosave is off; raises
        ``PathNotAllowedError`` when the option points outside the output directory."""
        directory = self._options().autosave_directory
        if not directory:
            return None
        return paths.resolve_inside(self.root, directory, "autosave_directory")

    def check_autosave_directory(self) -> None:
        """At start: say at once when autosaves cannot be written (the node runs on)."""
        try:
            directory = self.autosave_directory()
            if directory is not None:
                check_writable(directory)
        except (OSError, NPISegError) as error:
            self._events.on_rejected(f"autosave directory not usable, annotations are kept in "
                                     f"memory only until it is fixed: {error}")

    def resume(self, controller: AnnotationController) -> None:
        """Replay the autosave of the cloud just set on ``controller``, if there is one;
        problems and skipped clicks are reported as rejections."""
        try:
            directory = self.autosave_directory()
        except NPISegError as error:
            self._events.on_rejected(f"autosave not resumed: {error}")
            return
        if directory is None:
            return
        outcome = controller.resume(directory)
        for problem in outcome.problems:
            self._events.on_rejected(f"autosave: {problem}")
        for reason in outcome.skipped:
            self._events.on_rejected(f"resumed click rejected: {reason}")
        if outcome.found:
            self._events.on_resumed(outcome)

    def clicks_applied(self, count: int) -> None:
        """``count`` clicks were applied (for ``save_every: clicks``)."""
        self._clicks_since_save += count

    def autosave(self, controller: AnnotationController) -> None:
        """The clicks of the cloud being annotated, to the autosave directory (if any)."""
        try:
            directory = self.autosave_directory()
            if directory is not None:
                self._written(controller, controller.autosave(directory, with_labels=False))
        except (OSError, ValueError) as error:  # full disk, read-only, outside: kept
            self._events.on_rejected(f"autosave failed: {error}")

    def after_batch(self, controller: AnnotationController, cloud: Any) -> None:
        """``save_every: clicks``: the labels, once ``save_every_clicks`` clicks were applied
        since they were last written."""
        options = self._options()
        if options.save_every == "clicks" and \
                self._clicks_since_save >= options.save_every_clicks:
            self.save_labels(controller, cloud)

    def cloud_left(self, controller: AnnotationController, cloud: Any) -> None:
        """``save_every: cloud``: the labels of ``cloud``, about to be replaced."""
        if self._options().save_every == "cloud":
            self.save_labels(controller, cloud)

    def save(self, controller: AnnotationController, path: str, fmt: str) -> str:
        """``~/save_annotation``: export to ``path`` inside the output directory (empty:
        ``annotation.<fmt>`` in the autosave directory); returns the path written. Raises
        ``PathNotAllowedError``, ``OSError`` or ``ValueError`` (the reply's reason)."""
        if not path:
            fmt = fmt or "npz"
            path = str((self.autosave_directory() or self.root) / f"annotation.{fmt}")
        written = controller.save(paths.resolve_inside(self.root, path, "save_annotation path"),
                                  fmt)
        self._written(controller, written)
        return str(written)

    def save_labels(self, controller: AnnotationController, cloud: Any) -> None:
        """Write ``cloud``'s labels (when clicked and decoded) to
        ``labels/<stamp>_<fingerprint>.<save_format>`` of the autosave directory."""
        if cloud is None or controller.prediction is None or not controller.clicks:
            return
        self._clicks_since_save = 0
        stamp = getattr(cloud, "stamp", None)
        seconds, nanoseconds = (0, 0) if stamp is None else (stamp.sec, stamp.nanosec)
        fmt = self._options().save_format
        try:
            folder = (self.autosave_directory() or self.root) / "labels"
            name = f"{seconds:010d}_{nanoseconds:09d}_{controller.fingerprint[:8]}.{fmt}"
            self._written(controller, controller.save(
                paths.resolve_inside(self.root, folder / name, "labels path"), fmt))
        except (OSError, ValueError, NPISegError) as error:
            self._events.on_rejected(f"labels not saved: {error}")

    def _written(self, controller: AnnotationController, *written: Path) -> None:
        """Account for files just written and keep the output under its cap (never removing
        those, nor the autosave of the cloud being annotated: the crash safety)."""
        written = tuple(written) + tuple(previous_path(path) for path in written
                                         if previous_path(path).is_file())
        self._budget.record(*written)
        keep = written
        try:
            directory = self.autosave_directory()
        except NPISegError:
            directory = None
        if directory is not None and controller.fingerprint:
            current = autosave_path(directory, controller.fingerprint)
            keep += (current, previous_path(current))
        removed, problems = self._budget.enforce(keep=keep)
        if removed:
            self._events.on_output_removed([str(path) for path in removed])
        for problem in problems:
            self._events.on_rejected(f"output cap: {problem}")

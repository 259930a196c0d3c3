"""Fleet triage workers: the frame scorer (the model loaded once per worker) and the pools
that run it in this process or as Ray actors, with the bounded-in-flight, retrying scheduler.

``fleet.py`` plans the tasks, stores the rows and ranks the frames. Only :class:`RayPool`
imports Ray; the in-process path never does.
"""
from __future__ import annotations

import os
import resource
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from npiseg_ros.annotate.proposals import (occupancy_descriptor, prompt_frame, propose,
                                           proposal_terms)
from npiseg_ros.annotate.sources import FrameError, open_source, within_range
from npiseg_ros.core.errors import NPISegError

FLEET_EXTRA = "pip install 'npiseg_ros[fleet]'"
"""How to install the optional fleet dependencies (Ray, pyarrow)."""

ROW_COLUMNS = ("source", "frame", "index", "stamp_ns", "status", "error", "points", "dropped",
               "objects", "background_clicks", "mean_uncertainty", "max_uncertainty", "split",
               "merge", "novelty", "score", "rank", "encode_ms", "frame_ms", "thumbnail",
               "worker", "run_id", "descriptor")
"""One row per frame (``frame`` = "" for a source that could not be opened). ``status`` is
``ok`` or ``failed`` (then ``error`` says why and the numbers are null); ``worker`` = host/pid
of the process that scored it."""

ACTOR_RESTARTS = 2
"""Ray restarts a dead worker actor (reloading the model) this many times."""

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 ** 2
"""Object store of a local Ray (``--ray``): results are rows and small PNGs; Ray's default
(30 % of the memory) would take shared memory the model's workers need."""

CACHED_SOURCES = 4
"""Sources a worker keeps open (bags hold a file and an index)."""


@dataclass(frozen=True)
class ChunkTask:
    """Consecutive frames of one source to score.

    Attributes:
        source: absolute path of the source (what ``open_source`` opens on the worker).
        topic: PointCloud2 topic of a bag, or None.
        key: file-name safe, unique name of the source (thumbnail folder).
        indices: frame indices in the source.
        names: the frames' names, as the driver listed them (checked on the worker).
    """

    source: str
    topic: str | None
    key: str
    indices: tuple[int, ...]
    names: tuple[str, ...]


@dataclass
class ChunkResult:
    """Rows (``ROW_COLUMNS`` less score, rank and novelty) and thumbnails (frame -> PNG bytes)."""

    rows: list[dict]
    thumbnails: dict[str, bytes] = field(default_factory=dict)


def empty_row(source: str, frame: str, index: int) -> dict:
    row = dict.fromkeys(ROW_COLUMNS)
    row.update(source=source, frame=frame, index=index, status="ok", error="")
    return row


def failed_row(source: str, frame: str, index: int, error: str) -> dict:
    row = empty_row(source, frame, index)
    row.update(status="failed", error=error[:1000])
    return row


class FrameScorer:
    """One worker: holds the model (loaded once) and scores tasks.

    Args:
        checkpoint: model checkpoint, or None for the shipped one (``load_shipped_session``).
        device: torch device.
        samples: Monte-Carlo samples per decode.
        max_range: horizontal metres around the sensor that are prompted and labelled (None =
            every point).
        threads: torch threads of this worker (None: leave as set, e.g. by Ray's
            OMP_NUM_THREADS = the actor's CPUs).
    """

    def __init__(self, *, checkpoint: str | None = None, device: str = "cpu", samples: int = 4,
                 max_range: float | None = None, threads: int | None = None) -> None:
        from npiseg_ros.annotate.session import load_shipped_session

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.session, self.model = load_shipped_session(checkpoint, device, samples)
        self.worker = f"{socket.gethostname()}/{os.getpid()}"
        self.max_range = max_range
        self._sources: dict[tuple[str, str | None], object] = {}

    def describe(self) -> dict:
        """The model this worker runs and where it runs (host, process id)."""
        return {"model": self.model, "host": socket.gethostname(), "worker": self.worker}

    def peak_rss_mb(self) -> float:
        """Peak resident memory of this worker process so far, MB (Linux ``ru_maxrss``)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def _source(self, path: str, topic: str | None):
        key = (path, topic)
        if key not in self._sources:
            while len(self._sources) >= CACHED_SOURCES:
                self._sources.pop(next(iter(self._sources))).close()
            self._sources[key] = open_source(path, topic)
        return self._sources[key]

    def score(self, task: ChunkTask, on_frame: Callable[[], None] | None = None) -> ChunkResult:
        """Score the frames of ``task``; a frame that cannot be used becomes a failed row.

        Raises:
            SourceError: the source cannot be opened on this worker (the driver retries the
                task, then reports it).
        """
        source = self._source(task.source, task.topic)
        result = ChunkResult([])
        for index, name in zip(task.indices, task.names):
            if index >= len(source) or source.names[index] != name:
                row = failed_row(task.source, name, index, "the source changed since it was "
                                  "listed (frame not found on the worker)")
            else:
                row, png = self._score_frame(source, task.source, index, name)
                if png is not None:
                    result.thumbnails[name] = png
            result.rows.append(row)
            if on_frame is not None:
                on_frame()
        return result

    def _score_frame(self, source, path: str, index: int, name: str) -> tuple[dict, bytes | None]:
        from npiseg_ros.annotate.fleet_report import THUMBNAIL_HALF_WIDTH_M, thumbnail_png

        start = time.perf_counter()
        row = empty_row(path, name, index)
        row["worker"] = self.worker
        try:
            frame = source.frame(index)
            cropped = within_range(name, frame.xyz, self.max_range)
            summary = self.session.set_cloud(cropped, colors=frame.colors,
                                             intensity=frame.intensity)
            proposals = propose(cropped)
            prediction, object_ids = prompt_frame(self.session, proposals)
        except (FrameError, NPISegError, ValueError, OSError) as error:
            return dict(failed_row(path, name, index, str(error)), worker=self.worker), None
        terms = proposal_terms(proposals, prediction, object_ids)
        row.update(stamp_ns=frame.stamp_ns, points=summary.num_points,
                   dropped=summary.num_dropped, objects=terms.objects,
                   background_clicks=int(proposals.background_clicks.size),
                   mean_uncertainty=terms.mean_uncertainty,
                   max_uncertainty=terms.max_uncertainty, split=terms.split, merge=terms.merge,
                   encode_ms=summary.encode_ms,
                   descriptor=occupancy_descriptor(cropped).tolist())
        png = thumbnail_png(cropped, prediction.labels, proposals.clicks[object_ids > 0],
                            half_width_m=self.max_range or THUMBNAIL_HALF_WIDTH_M)
        row["frame_ms"] = (time.perf_counter() - start) * 1e3
        return row, png


class InProcessPool:
    """One :class:`FrameScorer` in this process; ``start`` runs the task at once."""

    ticks_per_frame = True

    def __init__(self, scorer_options: dict, on_frame: Callable[[], None]) -> None:
        self.scorer = FrameScorer(**scorer_options)
        self.workers = 1
        self.on_frame = on_frame
        self._done: dict[int, object] = {}
        self._started = 0

    def describe(self) -> list[dict]:
        return [self.scorer.describe()]

    def start(self, task: ChunkTask) -> int:
        handle = self._started
        self._started += 1
        try:
            self._done[handle] = self.scorer.score(task, self.on_frame)
        except Exception as error:  # noqa: BLE001 - reported per task, retried, never fatal
            self._done[handle] = error
        return handle

    def wait(self, handles: list[int]) -> list[tuple[int, object]]:
        return [(handles[0], self._done.pop(handles[0]))]

    def peak_rss_mb(self) -> list[float]:
        return [self.scorer.peak_rss_mb()]

    def close(self) -> None:
        pass


class RayPool:
    """:class:`FrameScorer` actors on a local Ray (``address`` None) or a cluster."""

    ticks_per_frame = False

    def __init__(self, scorer_options: dict, *, address: str | None, workers: int | None,
                 cpus_per_worker: int, log: Callable[[str], None]) -> None:
        try:
            import ray
        except ImportError as error:
            raise RuntimeError(f"--ray needs Ray ({error}): {FLEET_EXTRA}") from None
        self.ray = ray
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            local = workers or max(1, (os.cpu_count() or 1) // cpus_per_worker)
            ray.init(num_cpus=local * cpus_per_worker, include_dashboard=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False)
        if workers is None:
            cpus = ray.cluster_resources().get("CPU", 1)
            workers = max(1, int(cpus // cpus_per_worker))
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=ACTOR_RESTARTS)(FrameScorer)
        options = dict(scorer_options, threads=cpus_per_worker)
        self.actors = [actor.remote(**options) for _ in range(workers)]
        self.workers = workers
        self._load = {id(a): 0 for a in self.actors}
        self._actor_of: dict = {}
        self._failures = {id(a): 0 for a in self.actors}
        self.log = log

    def describe(self) -> list[dict]:
        """Waits for every worker's model (a model that cannot load fails here, once).

        Raises:
            RuntimeError: a worker could not start (no model, a package missing on a node).
        """
        try:
            return self.ray.get([a.describe.remote() for a in self.actors])
        except self.ray.exceptions.RayError as error:
            raise RuntimeError(f"the Ray workers could not start: {describe_error(error)}; "
                               "every node needs this package, its checkpoints and the "
                               "sources at the same paths (docs/triage.md)") from error

    def start(self, task: ChunkTask):
        if not self.actors:
            raise RuntimeError("every Ray worker died (more than "
                               f"{ACTOR_RESTARTS} restarts each); see the Ray logs")
        actor = min(self.actors, key=lambda a: self._load[id(a)])
        reference = actor.score.remote(task)
        self._load[id(actor)] += 1
        self._actor_of[reference] = actor
        return reference

    def wait(self, handles: list) -> list[tuple[object, object]]:
        ray = self.ray
        ready, _ = ray.wait(handles, num_returns=1)
        finished = []
        for reference in ready:
            actor = self._actor_of.pop(reference)
            self._load[id(actor)] -= 1
            try:
                outcome = ray.get(reference)
            except ray.exceptions.RayActorError as error:
                outcome = error
                self._failures[id(actor)] += 1
                if self._failures[id(actor)] > ACTOR_RESTARTS and actor in self.actors:
                    self.actors.remove(actor)
                    self.log(f"npiseg-annotate triage: a Ray worker died {ACTOR_RESTARTS + 1} "
                             f"times; {len(self.actors)} left")
            except ray.exceptions.RayError as error:
                outcome = getattr(error, "cause", None) or error
            finished.append((reference, outcome))
        return finished

    def peak_rss_mb(self) -> list[float]:
        return self.ray.get([a.peak_rss_mb.remote() for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.ray.shutdown()


def schedule(tasks: Iterable, pool, *, max_in_flight: int, retries: int,
             log: Callable[[str], None] = print) -> Iterator[tuple[object, object]]:
    """Run ``tasks`` on ``pool`` with at most ``max_in_flight`` started and not finished
    (backpressure: results are consumed as they come, the rest wait); yields (task, result)
    as tasks finish, the result being the exception of the last try when a task failed
    ``retries + 1`` times.

    ``pool``: ``start(task) -> handle``; ``wait(handles) -> [(handle, result or exception)]``
    for at least one finished handle.
    """
    if max_in_flight < 1 or retries < 0:
        raise ValueError("max_in_flight must be >= 1 and retries >= 0")
    pending = deque((task, 0) for task in tasks)
    in_flight: dict = {}
    while pending or in_flight:
        while pending and len(in_flight) < max_in_flight:
            task, attempt = pending.popleft()
            in_flight[pool.start(task)] = (task, attempt)
        for handle, outcome in pool.wait(list(in_flight)):
            task, attempt = in_flight.pop(handle)
            if isinstance(outcome, BaseException) and attempt < retries:
                log(f"npiseg-annotate triage: task failed ({describe_error(outcome)}); "
                    f"trying again ({attempt + 1}/{retries})")
                pending.append((task, attempt + 1))
                continue
            yield task, outcome


def describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:500]

"""Fleet triage: rank every frame of many drives, in this process or on a Ray cluster.

The driver opens each source once to list its frames, leaves out the frames already in
``OUT/triage.parquet`` (resume), and cuts the rest into tasks of a few consecutive frames.
Workers (:class:`FrameScorer`: the shipped model, loaded once per worker) prompt every frame with
automatic clicks (``proposals.py``) and return one row per frame plus a thumbnail. The driver
keeps a bounded number of tasks in flight (backpressure), retries a failed task a bounded number
of times, writes every finished task as a part file at once (a killed run loses at most the
tasks in flight), and at the end computes novelty (per source, in frame order, from the
descriptors the workers returned), the score and the rank, and writes ``triage.parquet``,
``triage.csv``, ``triage.png`` and ``index.html``.

Only :class:`_RayPool` imports Ray; the in-process path never does.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from npiseg_ros.annotate.proposals import (DESCRIPTOR_SIZE, combine_scores, novelty_of,
                                           occupancy_descriptor, prompt_frame, propose,
                                           proposal_terms)
from npiseg_ros.annotate.sources import FrameError, SourceError, open_source, within_range
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.io.atomic import atomic_write, atomic_write_bytes

__all__ = ["run_fleet_triage", "FleetSummary", "FrameScorer", "ChunkTask", "ChunkResult",
           "TriageStore", "require_pyarrow", "ROW_COLUMNS", "FLEET_EXTRA"]

FLEET_EXTRA = "pip install 'npiseg_ros[fleet]'"

ROW_COLUMNS = ("source", "frame", "index", "stamp_ns", "status", "error", "points", "dropped",
               "objects", "background_clicks", "mean_uncertainty", "max_uncertainty", "split",
               "merge", "novelty", "score", "rank", "encode_ms", "frame_ms", "thumbnail",
               "worker", "run_id", "descriptor")
"""One row per frame (``frame`` = "" for a source that could not be opened). ``status`` is
``ok`` or ``failed`` (then ``error`` says why and the numbers are null); ``worker`` = host/pid
of the process that scored it."""

_INTEGER = ("index", "stamp_ns", "points", "dropped", "objects", "background_clicks", "rank")
_FLOAT = ("mean_uncertainty", "max_uncertainty", "split", "merge", "novelty", "score",
          "encode_ms", "frame_ms")

CHUNK_FRAMES = 8
"""Frames per task: large enough that a task's overhead (scheduling, a source's first open in a
worker) is small against ~1 s per frame, small enough that a failed task costs little."""

TASK_RETRIES = 2
"""A failed task (worker died, unexpected error) is tried this many more times."""

ACTOR_RESTARTS = 2
"""Ray restarts a dead worker actor (reloading the model) this many times."""

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 ** 2
"""Object store of a local Ray (``--ray``): results are rows and small PNGs; Ray's default
(30 % of the memory) would take shared memory the model's workers need."""

CACHED_SOURCES = 4
"""Sources a worker keeps open (bags hold a file and an index)."""


def require_pyarrow():
    """``pyarrow`` (and ``pyarrow.parquet``), or a clear error naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"npiseg-annotate triage --out writes triage.parquet and needs pyarrow "
                           f"({error}): {FLEET_EXTRA}") from None
    return pyarrow


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


def _empty_row(source: str, frame: str, index: int) -> dict:
    row = dict.fromkeys(ROW_COLUMNS)
    row.update(source=source, frame=frame, index=index, status="ok", error="")
    return row


def _failed_row(source: str, frame: str, index: int, error: str) -> dict:
    row = _empty_row(source, frame, index)
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
        from npiseg_ros.annotate.workspace import load_shipped_session

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
                row = _failed_row(task.source, name, index, "the source changed since it was "
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
        row = _empty_row(path, name, index)
        row["worker"] = self.worker
        try:
            frame = source.frame(index)
            cropped = within_range(name, frame.xyz, self.max_range)
            summary = self.session.set_cloud(cropped, colors=frame.colors,
                                             intensity=frame.intensity)
            proposals = propose(cropped)
            prediction, object_ids = prompt_frame(self.session, proposals)
        except (FrameError, NPISegError, ValueError, OSError) as error:
            return dict(_failed_row(path, name, index, str(error)), worker=self.worker), None
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


class TriageStore:
    """``OUT/triage.parquet`` plus the part files of a run in progress (``OUT/parts/``).

    Raises:
        RuntimeError: pyarrow is not installed (names the extra).
    """

    def __init__(self, out: Path) -> None:
        self.pa = require_pyarrow()
        self.out = Path(out)
        self.parts = self.out / "parts"
        self.path = self.out / "triage.parquet"
        pa = self.pa
        types = {name: pa.int64() for name in _INTEGER}
        types.update({name: pa.float64() for name in _FLOAT})
        types["descriptor"] = pa.list_(pa.float32())
        self.schema = pa.schema([(name, types.get(name, pa.string())) for name in ROW_COLUMNS])

    def load(self) -> dict[tuple[str, str], dict]:
        """Rows of earlier runs by (source, frame); later part files win."""
        import pyarrow.parquet as pq

        rows: dict[tuple[str, str], dict] = {}
        paths = ([self.path] if self.path.is_file() else []) + sorted(self.parts.glob("*.parquet"))
        for path in paths:
            for row in pq.read_table(path).to_pylist():
                full = dict.fromkeys(ROW_COLUMNS)
                full.update({key: row[key] for key in ROW_COLUMNS if key in row})
                rows[(full["source"], full["frame"])] = full
        return rows

    def _write(self, path: Path, rows: list[dict]) -> None:
        import pyarrow.parquet as pq

        table = self.pa.Table.from_pylist([{key: row.get(key) for key in ROW_COLUMNS}
                                           for row in rows], schema=self.schema)
        atomic_write(path, lambda file: pq.write_table(table, file), mode=0o644)

    def append(self, rows: list[dict], name: str) -> None:
        """One part file of finished rows (written whole or not at all)."""
        self._write(self.parts / f"{name}.parquet", rows)

    def finish(self, rows: list[dict]) -> None:
        """All rows into ``triage.parquet``; the part files go."""
        self._write(self.path, rows)
        for part in self.parts.glob("*.parquet"):
            part.unlink()
        if self.parts.is_dir() and not any(self.parts.iterdir()):
            self.parts.rmdir()


class _InProcessPool:
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


class _RayPool:
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
            raise RuntimeError(f"the Ray workers could not start: {_describe_error(error)}; "
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
                log(f"npiseg-annotate triage: task failed ({_describe_error(outcome)}); "
                    f"trying again ({attempt + 1}/{retries})")
                pending.append((task, attempt + 1))
                continue
            yield task, outcome


def _describe_error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:500]


def source_key(path: str) -> str:
    """A file-name safe, unique folder name for a source's thumbnails."""
    name = Path(path).name or "source"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip(".")
    return f"{safe or 'source'}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


@dataclass
class FleetSummary:
    """What a fleet triage run did.

    Attributes:
        rows: every row of ``triage.parquet`` (this run's and earlier ones), with score/rank.
        scored: frames scored by this run (failed ones included).
        skipped: frames already in the parquet (status ok), not scored again.
        failed_sources: (source, error) of sources that could not be opened or whose tasks
            failed after the retries.
        seconds: wall time of the scoring (model loading included).
        ready_seconds: of which until every worker had loaded its model (and Ray had started).
        workers: processes that scored (1 in process).
        peak_rss_mb: peak resident memory of each worker, MB (empty when nothing was scored).
        out: the output folder.
    """

    rows: list[dict]
    scored: int
    skipped: int
    failed_sources: list[tuple[str, str]]
    seconds: float
    ready_seconds: float
    workers: int
    peak_rss_mb: list[float]
    out: Path

    @property
    def failed_frames(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "ok" and r["frame"]]


def _settings_check(out: Path, settings: dict) -> None:
    """Refuse to mix scores made with other settings into one ranking."""
    path = out / "triage.json"
    if path.is_file():
        stored = json.loads(path.read_text()).get("settings", {})
        different = {key: (stored.get(key), value) for key, value in settings.items()
                     if stored.get(key) != value}
        if different:
            raise ValueError(
                f"{out} holds a triage made with other settings ("
                + ", ".join(f"{k}: {old!r} then, {new!r} now" for k, (old, new)
                            in different.items())
                + "); use the same options or another --out")
    atomic_write_bytes(path, json.dumps({"settings": settings}, indent=1).encode(), mode=0o644)


def _plan(sources: list[str], topic: str | None, done: dict, chunk_frames: int,
          ) -> tuple[list[ChunkTask], list[dict], int]:
    """Tasks for the frames not yet scored, rows of the sources that cannot be opened, and the
    number of frames skipped."""
    tasks, failed, skipped = [], [], 0
    for path in sources:
        try:
            source = open_source(path, topic)
        except (SourceError, OSError) as error:
            failed.append(_failed_row(path, "", -1, str(error)))
            continue
        try:
            names = list(source.names)
        finally:
            source.close()
        todo = []
        for index, name in enumerate(names):
            if (path, name) in done:
                skipped += 1
            else:
                todo.append(index)
        for start in range(0, len(todo), chunk_frames):
            indices = tuple(todo[start:start + chunk_frames])
            tasks.append(ChunkTask(path, topic, source_key(path), indices,
                                   tuple(names[i] for i in indices)))
    return tasks, failed, skipped


def _finish_rows(rows: list[dict], order: list[str]) -> list[dict]:
    """Novelty per source (frame order), score and rank over every row; sorted by source
    (``order`` first, then earlier runs' sources) and frame index."""
    position = {path: i for i, path in enumerate(order)}
    rows = sorted(rows, key=lambda r: (position.get(r["source"], len(order)), r["source"],
                                       r["index"]))
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == "ok":
            by_source.setdefault(row["source"], []).append(row)
    for members in by_source.values():
        descriptors = np.array([r["descriptor"] or [0.0] * DESCRIPTOR_SIZE for r in members])
        for row, value in zip(members, novelty_of(descriptors)):
            row["novelty"] = float(value)
    ok = [r for r in rows if r["status"] == "ok"]
    scores = combine_scores(*(np.array([r[key] for r in ok], np.float64)
                              for key in ("mean_uncertainty", "split", "merge", "novelty")))
    for row, score in zip(ok, scores):
        row["score"] = round(float(score), 6)
    ranked = sorted(range(len(ok)), key=lambda i: (-ok[i]["score"], i))
    for rank, i in enumerate(ranked, 1):
        ok[i]["rank"] = rank
    for row in rows:
        if row["status"] != "ok":
            row.update(score=None, rank=None, novelty=None)
    return rows


def _task_rows(task: ChunkTask, outcome, out: Path, *, tries: int) -> list[dict]:
    """The rows of a finished task, its thumbnails written under ``out/thumbs``; a task that
    failed every try gives a failed row per frame."""
    if isinstance(outcome, BaseException):
        error = f"task failed after {tries} tries: {_describe_error(outcome)}"
        return [_failed_row(task.source, name, index, error)
                for index, name in zip(task.indices, task.names)]
    for row in outcome.rows:
        png = outcome.thumbnails.get(row["frame"])
        if png is not None:
            relative = f"thumbs/{task.key}/{row['frame']}.png"
            atomic_write_bytes(out / relative, png, mode=0o644)
            row["thumbnail"] = relative
    return outcome.rows


def run_fleet_triage(sources: list[str], out: str | os.PathLike, *, use_ray: bool = False,
                     ray_address: str | None = None, workers: int | None = None,
                     cpus_per_worker: int = 1, chunk_frames: int = CHUNK_FRAMES,
                     max_in_flight: int | None = None, retries: int = TASK_RETRIES,
                     topic: str | None = None, checkpoint: str | None = None,
                     device: str = "cpu", samples: int = 4, max_range: float | None = None,
                     top: int = 50, progress: bool = True,
                     log: Callable[[str], None] = print) -> FleetSummary:
    """Triage every frame of ``sources`` into ``out`` (see the module docstring).

    Args:
        sources: bags, KITTI sequence / velodyne folders, folders of clouds or cloud files; one
            source each (made absolute; the same path twice counts once).
        out: output folder (created); a re-run scores only the frames not yet in it (failed
            ones are tried again).
        use_ray: score on Ray actors (a local Ray unless ``ray_address`` is given).
        ray_address: join this Ray cluster (``auto``, ``ray://host:10001``, ``host:6379``).
        workers: Ray workers (default: local CPUs / ``cpus_per_worker``, or the cluster's).
        cpus_per_worker: CPUs (and torch threads) per Ray worker.
        chunk_frames: frames per task.
        max_in_flight: tasks started and not finished (default 2 per worker).
        retries: extra tries of a failed task.
        top: frames listed in ``index.html``.

    Raises:
        RuntimeError: pyarrow (or Ray with ``use_ray``) is missing; names the extra.
        ValueError: bad options, or ``out`` holds a triage made with other settings.
    """
    if chunk_frames < 1 or cpus_per_worker < 1 or (workers is not None and workers < 1):
        raise ValueError("chunk_frames, cpus_per_worker and workers must be >= 1")
    if not sources:
        raise ValueError("give at least one source")
    store = TriageStore(Path(out))
    out = store.out
    out.mkdir(parents=True, exist_ok=True)
    _settings_check(out, {"checkpoint": checkpoint or "shipped", "samples": samples,
                          "max_range": max_range, "topic": topic})
    paths = list(dict.fromkeys(str(Path(s).expanduser().resolve()) for s in sources))
    given = set(paths)
    earlier = store.load()
    done = {key: row for key, row in earlier.items() if row["status"] == "ok"}
    tasks, failed_rows, skipped = _plan(paths, topic, done, chunk_frames)
    total = sum(len(t.indices) for t in tasks)
    log(f"npiseg-annotate triage: {len(paths)} source(s), {total} frame(s) to score, "
        f"{skipped} already in {store.path.name}")
    from tqdm import tqdm

    run_id = uuid.uuid4().hex[:12]
    new_rows: list[dict] = []
    peak: list[float] = []
    started = time.perf_counter()
    worker_count = 0
    ready = 0.0
    if tasks:
        bar = tqdm(total=total, desc="triage", unit="frame", disable=not progress)
        options = dict(checkpoint=checkpoint, device=device, samples=samples,
                       max_range=max_range)
        pool = (_RayPool(options, address=ray_address, workers=workers,
                         cpus_per_worker=cpus_per_worker, log=log) if use_ray or ray_address
                else _InProcessPool(options, on_frame=lambda: bar.update(1)))
        try:
            described = pool.describe()
            ready = time.perf_counter() - started
            worker_count = pool.workers
            log(f"npiseg-annotate triage: {worker_count} worker(s), model {described[0]['model']}"
                + (f", hosts {sorted({d['host'] for d in described})}" if use_ray
                   or ray_address else ""))
            in_flight = max_in_flight or 2 * worker_count
            for number, (task, outcome) in enumerate(schedule(
                    tasks, pool, max_in_flight=in_flight, retries=retries, log=log)):
                rows = _task_rows(task, outcome, out, tries=retries + 1)
                for row in rows:
                    row["run_id"] = run_id
                store.append(rows, f"{run_id}-{number:06d}")
                new_rows.extend(rows)
                if not pool.ticks_per_frame:
                    bar.update(len(rows))
            peak = pool.peak_rss_mb()
        finally:
            pool.close()
            bar.close()
    seconds = time.perf_counter() - started
    for row in failed_rows:
        row["run_id"] = run_id
    # earlier rows stay, but the failed ones of the sources given now: those were tried again
    merged = {key: row for key, row in earlier.items()
              if row["status"] == "ok" or row["source"] not in given}
    merged.update({(r["source"], r["frame"]): r for r in failed_rows + new_rows})
    rows = _finish_rows(list(merged.values()), paths)
    store.finish(rows)
    from npiseg_ros.annotate.fleet_report import write_reports

    write_reports(out, rows, top=top)
    failed_sources = [(r["source"], r["error"]) for r in failed_rows]
    for row in new_rows:
        if row["status"] != "ok" and row["error"].startswith("task failed"):
            if (row["source"], row["error"]) not in failed_sources:
                failed_sources.append((row["source"], row["error"]))
    return FleetSummary(rows=rows, scored=len(new_rows), skipped=skipped,
                        failed_sources=failed_sources, seconds=seconds, ready_seconds=ready,
                        workers=worker_count, peak_rss_mb=peak, out=out)

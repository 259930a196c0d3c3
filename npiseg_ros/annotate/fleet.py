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

Workers and pools live in ``fleet_workers.py``; only its ``RayPool`` imports Ray: the
in-process path never does.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from npiseg_ros.annotate.fleet_workers import (FLEET_EXTRA, ROW_COLUMNS, ChunkResult, ChunkTask,
                                              FrameScorer, InProcessPool, RayPool,
                                              describe_error, failed_row, schedule)
from npiseg_ros.annotate.proposals import DESCRIPTOR_SIZE, combine_scores, novelty_of
from npiseg_ros.annotate.sources import SourceError, open_source
from npiseg_ros.io.atomic import atomic_write, atomic_write_bytes

__all__ = ["run_fleet_triage", "FleetSummary", "FrameScorer", "ChunkTask", "ChunkResult",
           "TriageStore", "require_pyarrow", "ROW_COLUMNS", "FLEET_EXTRA"]

_INTEGER = ("index", "stamp_ns", "points", "dropped", "objects", "background_clicks", "rank")
_FLOAT = ("mean_uncertainty", "max_uncertainty", "split", "merge", "novelty", "score",
          "encode_ms", "frame_ms")

CHUNK_FRAMES = 8
"""Frames per task: large enough that a task's overhead (scheduling, a source's first open in a
worker) is small against ~1 s per frame, small enough that a failed task costs little."""

TASK_RETRIES = 2
"""A failed task (worker died, unexpected error) is tried this many more times."""


def require_pyarrow():
    """``pyarrow`` (and ``pyarrow.parquet``), or a clear error naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f"npiseg-annotate triage --out writes triage.parquet and needs pyarrow "
                           f"({error}): {FLEET_EXTRA}") from None
    return pyarrow


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
            failed.append(failed_row(path, "", -1, str(error)))
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
        error = f"task failed after {tries} tries: {describe_error(outcome)}"
        return [failed_row(task.source, name, index, error)
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
        pool = (RayPool(options, address=ray_address, workers=workers,
                         cpus_per_worker=cpus_per_worker, log=log) if use_ray or ray_address
                else InProcessPool(options, on_frame=lambda: bar.update(1)))
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

"""Fleet triage (issue 22): automatic prompts and score terms on hand-made clouds, the task
scheduler's backpressure and retries, and ``npiseg-annotate triage A B --out O`` on a local Ray
of 2 workers over two small synthetic drives and a sweep file (rows, a corrupt file and an
unreadable bag reported, resume without Ray and without importing it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from annotate_helpers import REPO
from npiseg_ros.annotate.fleet_workers import schedule
from npiseg_ros.annotate.proposals import (DESCRIPTOR_SIZE, UNASSIGNED, combine_scores,
                                           novelty_of, occupancy_descriptor, propose,
                                           proposal_terms)
from npiseg_ros.core.types import ObjectStats, Prediction

ENV = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}


def _box(centre, size, step=0.1) -> np.ndarray:
    """Points on the faces of an axis-aligned box (a LiDAR sees surfaces), metres."""
    centre, size = np.asarray(centre, float), np.asarray(size, float)
    axes = [np.arange(-s / 2, s / 2 + 1e-9, step) for s in size]
    faces = []
    for fixed in range(3):
        others = [a for a in range(3) if a != fixed]
        u, v = np.meshgrid(axes[others[0]], axes[others[1]], indexing="ij")
        for side in (-size[fixed] / 2, size[fixed] / 2):
            face = np.zeros((u.size, 3))
            face[:, others[0]], face[:, others[1]], face[:, fixed] = u.ravel(), v.ravel(), side
            faces.append(face)
    return np.unique(np.round(np.concatenate(faces), 6), axis=0) + centre


def _scene():
    """Flat ground (z = 0, 30 x 30 m), a car-sized box, a small post, a 24 m wall (stuff) and a
    5-point speck, all 0.25 m or more above the ground (``ground_mask`` keeps points under 0.2 m
    as ground); returns xyz and the point indices of each part."""
    g = np.arange(-15, 15, 0.3)
    gx, gy = np.meshgrid(g, g, indexing="ij")
    ground = np.column_stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)])
    car = _box((5.0, 0.0, 1.0), (4.0, 1.8, 1.5))
    post = _box((-6.0, 4.0, 1.3), (0.3, 0.3, 2.0))
    wall = _box((0.0, 12.0, 1.8), (24.0, 0.4, 3.0), step=0.2)
    speck = np.array([[-10.0, -10.0, 1.5 + 0.05 * i] for i in range(5)])
    parts = [ground, car, post, wall, speck]
    bounds = np.cumsum([0] + [len(p) for p in parts])
    names = ("ground", "car", "post", "wall", "speck")
    return np.concatenate(parts), {n: np.arange(bounds[i], bounds[i + 1])
                                   for i, n in enumerate(names)}


def test_propose_one_click_per_object_background_on_ground_and_stuff():
    xyz, part = _scene()
    proposals = propose(xyz)
    assert proposals.count == 2  # the car, then the post; the wall is stuff, the speck too small
    assert set(proposals.thing_of_point[part["car"]]) == {0}
    assert set(proposals.thing_of_point[part["post"]]) == {1}
    for name in ("ground", "wall", "speck"):
        assert set(proposals.thing_of_point[part[name]]) == {UNASSIGNED}
    assert proposals.clicks[0] in part["car"] and proposals.clicks[1] in part["post"]
    # the click is the member nearest the centroid
    car = xyz[part["car"]]
    nearest = part["car"][np.argmin(np.linalg.norm(car - car.mean(axis=0), axis=1))]
    assert proposals.clicks[0] == nearest
    assert proposals.background_clicks.size == 2  # the ground and the one stuff piece
    assert proposals.background_clicks[0] in part["ground"]
    assert proposals.background_clicks[1] in part["wall"]
    assert proposals.ground[part["ground"]].all() and not proposals.ground[part["post"]].any()

    limited = propose(xyz, max_proposals=1, stuff_clicks=1)
    assert limited.count == 1 and limited.clicks[0] == proposals.clicks[0]
    assert set(limited.thing_of_point[part["post"]]) == {UNASSIGNED}
    assert limited.background_clicks.tolist() == proposals.background_clicks[:1].tolist()
    # the wall becomes an object when objects may be that long
    assert propose(xyz, max_extent_m=30.0).count == 3


def test_propose_skips_dropped_points_and_rejects_bad_input():
    xyz, part = _scene()
    cropped = xyz.copy()
    cropped[part["post"]] = np.nan  # e.g. beyond --max-range
    proposals = propose(cropped)
    assert proposals.count == 1 and set(proposals.thing_of_point[part["post"]]) == {UNASSIGNED}
    empty = propose(np.full((10, 3), np.nan))
    assert empty.count == 0 and empty.background_clicks.size == 0
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        propose(np.zeros((4, 2)))


def _prediction(labels, stats) -> Prediction:
    labels = np.asarray(labels, np.int32)
    return Prediction(labels=labels, uncertainty=np.zeros(labels.size, np.float32),
                      object_stats={s.object_id: s for s in stats})


def test_proposal_terms_split_merge_and_uncertainty():
    from npiseg_ros.annotate.proposals import Proposals

    # proposal 0 = points 0-3 (object 1), proposal 1 = points 4-7 (object 2), proposal 2's
    # click was rejected (object id 0); point 9 was dropped
    thing = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 0], np.int32)
    thing[8] = 2
    proposals = Proposals(thing, np.array([0, 4, 8]), np.array([], np.int64),
                          np.zeros(10, bool))
    labels = [1, 1, 2, 0, 2, 2, 2, 2, 2, -1]
    stats = [ObjectStats(0, 1, 0.0, 0), ObjectStats(1, 2, 0.2, 1), ObjectStats(2, 6, 0.6, 1)]
    terms = proposal_terms(proposals, _prediction(labels, stats), np.array([1, 2, 0]))
    assert terms.objects == 2
    # proposal 0 keeps 2 of its 4 valid points (split 0.5); proposal 1 keeps all (0)
    assert terms.split == pytest.approx((0.5 + 0.0) / 2)
    # mask 1 = points 0, 1 (all its own: 0); mask 2 = points 2, 4-8: 4 of 6 its own (1/3)
    assert terms.merge == pytest.approx((0.0 + 1 / 3) / 2)
    assert terms.mean_uncertainty == pytest.approx(0.4)
    assert terms.max_uncertainty == pytest.approx(0.6)
    nothing = proposal_terms(proposals, _prediction(labels, stats), np.zeros(3, np.int64))
    assert (nothing.objects, nothing.split, nothing.merge) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="points"):
        proposal_terms(proposals, _prediction(labels[:5], stats), np.array([1, 2, 0]))


def test_descriptor_and_novelty():
    ring = np.array([[2.0 * np.cos(a), 2.0 * np.sin(a), z] for a in np.linspace(-3, 3, 60)
                     for z in (0.0, 1.0)])
    far = ring * [12.5, 12.5, 1.0]  # the same shape 25 m away: every point in other cells
    near = occupancy_descriptor(ring)
    assert near.shape == (DESCRIPTOR_SIZE,) and near.sum() == pytest.approx(1.0)
    assert occupancy_descriptor(np.full((3, 3), np.nan)).sum() == 0.0
    descriptors = np.stack([near, near, occupancy_descriptor(far), near])
    novelty = novelty_of(descriptors)
    assert novelty.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0])  # frame 3 is like 0 and 1
    assert novelty_of(descriptors, window=1)[3] == pytest.approx(1.0)  # sees frame 2 only
    half = ring.copy()
    half[: len(ring) // 2] = far[: len(ring) // 2]
    assert novelty_of(np.stack([near, occupancy_descriptor(half)]))[1] == pytest.approx(0.5)


def test_combine_scores_scales_uncertainty_by_its_largest_value():
    scores = combine_scores(np.array([0.1, 0.4, 0.2, np.nan]), np.array([0.5, 0.0, 0.0, 0.0]),
                            np.array([0.0, 0.25, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0]))
    assert scores[:3] == pytest.approx([0.25 + 0.5 + 1.0, 1.0 + 0.25, 0.5])
    assert np.isnan(scores[3])
    assert combine_scores(np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2)).tolist() == [1, 1]


class _FakePool:
    """Tasks are ints; ``failures[t]`` tries of task t fail before one succeeds; finishes the
    oldest task first; records the largest number in flight."""

    def __init__(self, failures: dict[int, int]) -> None:
        self.failures = dict(failures)
        self.in_flight: list = []
        self.most = 0
        self.tries: dict[int, int] = {}

    def start(self, task):
        handle = object()
        self.in_flight.append((handle, task))
        self.most = max(self.most, len(self.in_flight))
        self.tries[task] = self.tries.get(task, 0) + 1
        return handle

    def wait(self, handles):
        handle, task = self.in_flight.pop(0)
        assert handle in handles
        if self.failures.get(task, 0) > 0:
            self.failures[task] -= 1
            return [(handle, RuntimeError(f"task {task} crashed"))]
        return [(handle, task * 10)]


def test_schedule_bounds_tasks_in_flight_and_retries_failed_ones():
    pool = _FakePool({3: 1, 5: 10})
    messages: list[str] = []
    results = dict(schedule(range(8), pool, max_in_flight=3, retries=2, log=messages.append))
    assert pool.most == 3
    assert sorted(results) == list(range(8))
    assert results[3] == 30 and pool.tries[3] == 2  # failed once, then done
    assert isinstance(results[5], RuntimeError) and pool.tries[5] == 3  # 1 try + 2 retries
    assert all(results[t] == t * 10 for t in (0, 1, 2, 4, 6, 7))
    assert sum("trying again" in m for m in messages) == 3
    with pytest.raises(ValueError):
        list(schedule([1], pool, max_in_flight=0, retries=0))


# ---------------------------------------------------------------- the CLI over synthetic drives
def _drives(root: Path) -> dict[str, Path]:
    """A KITTI-style sequence folder (3 sweeps), a bag (2 sweeps, rosbag2 sqlite3 with /tf), one
    sweep file, a corrupt .bin and a .db3 that is no database."""
    from npiseg_ros.annotate.synthdrive import synthetic_drive, write_synthetic_bag

    clouds, intensities, _ = synthetic_drive(3, scene_every=2, azimuth_steps=128, seed=1)
    velodyne = root / "seq" / "velodyne"
    velodyne.mkdir(parents=True)
    for index, (xyz, intensity) in enumerate(zip(clouds, intensities)):
        np.column_stack([xyz, intensity]).astype(np.float32).tofile(velodyne / f"{index:06d}.bin")
    bag = write_synthetic_bag(root / "bag", 2, scene_every=2, azimuth_steps=128, seed=2)
    sweep = root / "sweep.bin"
    np.column_stack([clouds[0] + [3.0, 0, 0], intensities[0]]).astype(np.float32).tofile(sweep)
    broken = root / "broken.bin"
    broken.write_bytes(b"\0" * 10)
    garbage = root / "garbage.db3"
    garbage.write_text("not a database")
    return {"seq": root / "seq", "bag": Path(bag), "sweep": sweep, "broken": broken,
            "garbage": garbage}


def _triage(*args: str, prelude: str = "", timeout: float = 900):
    code = (f"import sys\n{prelude}\nfrom npiseg_ros.annotate.cli import main\n"
            f"code = main(sys.argv[1:])\nprint('ray imported:', 'ray' in sys.modules)\n"
            "sys.exit(code)")
    import os

    return subprocess.run([sys.executable, "-c", code, "triage", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **ENV))


def _rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(out / "triage.parquet").to_pylist()


def test_fleet_on_local_ray_rows_failures_and_resume_in_process(tmp_path):
    pytest.importorskip("ray", reason="fleet triage needs ray (pip install 'npiseg_ros[fleet]')")
    pytest.importorskip("pyarrow", reason="fleet triage needs pyarrow ('npiseg_ros[fleet]')")
    pytest.importorskip("rosbags", reason="bags need rosbags ('npiseg_ros[annotate]')")
    from npiseg_ros.resources import shipped_checkpoint

    if not shipped_checkpoint():
        pytest.fail("no shipped checkpoint: fleet triage needs the shipped model")
    drives = _drives(tmp_path / "in")
    out = tmp_path / "out"
    sources = [str(drives[k]) for k in ("seq", "bag", "sweep", "broken", "garbage")]
    first = _triage(*sources, "--out", str(out), "--ray", "--workers", "2", "--chunk-frames", "1",
                    "--samples", "2", "--no-progress")
    assert first.returncode == 1, first.stdout + first.stderr  # a source failed, rest written
    assert "source failed: " + str(drives["garbage"]) in first.stdout
    assert "1 frame(s) unusable: broken.bin/broken" in first.stdout
    rows = _rows(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted((Path(r["source"]).name, r["index"]) for r in ok) == [
        ("bag", 0), ("bag", 1), ("seq", 0), ("seq", 1), ("seq", 2), ("sweep.bin", 0)]
    assert len({(r["source"], r["frame"]) for r in rows}) == len(rows) == 8
    assert len({r["worker"] for r in ok}) == 2  # both Ray workers scored frames
    assert sorted(r["rank"] for r in ok) == [1, 2, 3, 4, 5, 6]
    for row in ok:
        assert row["objects"] >= 1 and 0 <= row["split"] <= 1 and 0 <= row["merge"] <= 1
        assert 0 <= row["novelty"] <= 1 and row["max_uncertainty"] >= row["mean_uncertainty"]
        assert len(row["descriptor"]) == DESCRIPTOR_SIZE
        assert (out / row["thumbnail"]).read_bytes()[:4] == b"\x89PNG"
        assert (row["stamp_ns"] is not None) == (Path(row["source"]).name == "bag")
    first_of = {Path(r["source"]).name: r for r in ok if r["index"] == 0}
    assert {first_of[k]["novelty"] for k in ("seq", "bag", "sweep.bin")} == {1.0}
    failed = {Path(r["source"]).name: r for r in rows if r["status"] == "failed"}
    assert "multiple of 4" in failed["broken.bin"]["error"]
    assert failed["garbage.db3"]["frame"] == "" and "rosbag2" in failed["garbage.db3"]["error"]
    assert failed["garbage.db3"]["score"] is None and failed["broken.bin"]["rank"] is None
    page = (out / "index.html").read_text()
    assert all(r["thumbnail"] in page for r in ok) and "garbage.db3" in page
    csv_lines = (out / "triage.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 8 and (out / "triage.png").stat().st_size > 10_000
    assert not (out / "parts").exists()
    # the browser tool reads the CSV's frame + rank: a source's frames open in rank order
    from npiseg_ros.annotate.frames import read_triage_order

    seq = sorted((r for r in ok if Path(r["source"]).name == "seq"), key=lambda r: r["rank"])
    assert read_triage_order(out / "triage.csv", ["000000", "000001", "000002"]) == [
        r["index"] for r in seq]

    # resume, in process: nothing scored again (the failed sources are tried again), Ray never
    # imported
    again = _triage(*sources, "--out", str(out), "--samples", "2", "--no-progress")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "6 already in triage.parquet" in again.stderr and "scored 1 frame(s)" in again.stdout
    assert "ray imported: False" in again.stdout
    rerun = {(r["source"], r["frame"]): r for r in _rows(out)}
    for row in ok:
        kept = rerun[(row["source"], row["frame"])]
        assert kept["run_id"] == row["run_id"] and kept["score"] == row["score"]
    assert rerun[(str(drives["broken"]), "broken")]["run_id"] != failed["broken.bin"]["run_id"]

    # a run over one source keeps the other sources' rows, failed ones too (nothing to score:
    # no model is loaded)
    third = _triage(sources[0], "--out", str(out), "--samples", "2", "--no-progress")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "scored 0 frame(s)" in third.stdout
    assert {(r["source"], r["frame"]) for r in _rows(out)} == set(rerun)


def test_fleet_without_pyarrow_names_the_extra(tmp_path):
    result = _triage(str(tmp_path), "--out", str(tmp_path / "o"),
                     prelude="sys.modules['pyarrow'] = None")
    assert result.returncode == 2
    assert "pyarrow" in result.stderr and "npiseg_ros[fleet]" in result.stderr


def test_fleet_option_errors(capsys, tmp_path):
    from npiseg_ros.annotate.cli import main

    assert main(["triage", str(tmp_path), "--ray"]) == 2
    assert "--ray and --ray-address need --out" in capsys.readouterr().err
    assert main(["triage", str(tmp_path), "--out", str(tmp_path / "o"), "--session",
                 str(tmp_path / "s")]) == 2
    assert "not both" in capsys.readouterr().err

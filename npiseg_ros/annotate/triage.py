"""Triage: encode every frame once and rank the frames that need a person's attention.

For every frame (source order) the pass records:

- ``novelty``: fraction of the frame's points with no point of the previous frame within
  ``radius`` metres (through /tf poses when the bag has them): new scene content.
- ``own_clicks``: clicks a person confirmed in the frame (saved in the session folder, less
  the ones the browser tool carried or imported into it, which count as ``carried_clicks``);
  a frame without saved clicks gets the clicks that landed in the frame before it
  (``carried_clicks``), re-applied at their positions (through /tf poses when there are any),
  as the browser tool does when stepping; ``missed_clicks`` land on no point. When all of them
  miss, the objects have left and nothing is carried further.
- frames a reviewer ``accepted`` in the browser tool are not scored (``status``): they rank
  after every scored frame, and their saved clicks are carried on.
- ``object_uncertainty``: mean per-point uncertainty over the points labelled with an object
  after those clicks: how unsure the model is about the carried-over (or saved) objects.
- ``score`` = object uncertainty / its largest value in the pass + missed fraction + novelty;
  frames that cannot be read rank last with their error. ``rank`` 1 = look first.

Output: ``triage.csv`` and ``triage.png`` in the session folder; the browser tool then opens
frames in rank order.

This ranks one source by the clicks of a labelling session. Many sources, before anyone clicks,
in process or on Ray: ``fleet.py`` (``npiseg-annotate triage SOURCE... --out DIR``,
docs/triage.md).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from npiseg_ros.annotate.review import frame_statuses, tool_clicks
from npiseg_ros.annotate.sources import FrameError, FrameSource, within_range
from npiseg_ros.annotate.carrying import carry_clicks
from npiseg_ros.annotation import AnnotationController
from npiseg_ros.core.errors import NPISegError
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.io.atomic import atomic_write_bytes

__all__ = ["run_triage", "COLUMNS"]

COLUMNS = ("frame", "index", "points", "dropped", "encode_ms", "novelty", "own_clicks",
           "carried_clicks", "missed_clicks", "object_uncertainty", "score", "rank", "error",
           "status")


def _world(points: np.ndarray, pose: np.ndarray | None) -> np.ndarray:
    return points if pose is None else points @ pose[:3, :3].T + pose[:3, 3]


def _novelty(current: np.ndarray, previous: np.ndarray | None, radius: float,
             rng: np.random.Generator) -> float:
    if previous is None or previous.size == 0:
        return 1.0
    from scipy.spatial import cKDTree

    sample = current[rng.choice(len(current), min(len(current), 5000), replace=False)]
    distance, _ = cKDTree(previous).query(sample, k=1, distance_upper_bound=radius)
    return float(np.mean(~np.isfinite(distance)))


def run_triage(source: FrameSource, session: SegmentationSession, folder: str | Path, *,
               radius: float = 0.5, progress: bool = True, max_range: float | None = None,
               log=print) -> list[dict]:
    """Triage every frame of ``source``; writes ``triage.csv`` and ``triage.png`` into
    ``folder`` and returns the rows (source order)."""
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    annotation = AnnotationController(session)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    carry: list[tuple[np.ndarray, int]] = []     # (world position, object id)
    previous_world = None
    statuses = frame_statuses(folder)
    bar = tqdm(range(len(source)), desc="triage", unit="frame", disable=not progress)
    for index in bar:
        name = source.names[index]
        row = {key: "" for key in COLUMNS}
        row.update(frame=name, index=index, status=statuses.get(name, "todo"))
        if row["status"] == "accepted":  # reviewed: no attention needed, its clicks go on
            carry = _accepted_clicks(source, index, folder) or carry
            rows.append(row)
            continue
        try:
            frame = source.frame(index)
            cropped = within_range(name, frame.xyz, max_range)
            summary = annotation.set_cloud(frame.xyz, segment=cropped, intensity=frame.intensity,
                                           colors=frame.colors, frame_id=frame.frame_id)
        except (FrameError, NPISegError, ValueError) as error:
            row["error"] = str(error)
            rows.append(row)
            continue  # novelty of the next frame is against the last usable one
        valid = np.isfinite(cropped).all(axis=1)
        world = _world(frame.xyz[valid].astype(np.float64), frame.pose)
        row.update(points=summary.num_points, dropped=summary.num_dropped,
                   encode_ms=round(summary.encode_ms, 1),
                   novelty=round(_novelty(world, previous_world, radius, rng), 4))
        previous_world = world
        # the browser tool's replay (a click saved with another --max-range is left out)
        own = annotation.resume(folder / "autosave" / name).saved_clicks
        tool = min(tool_clicks(folder, name), own) if own else 0
        row["own_clicks"] = own - tool
        if own:
            row.update(carried_clicks=tool, missed_clicks=0)
        elif carry:
            inverse = None if frame.pose is None else np.linalg.inv(frame.pose)
            missed = carry_clicks(annotation, carry, inverse)
            row.update(carried_clicks=len(carry), missed_clicks=len(missed))
        if annotation.clicks:
            prediction = annotation.predict()
            objects = prediction.labels > 0
            row["object_uncertainty"] = round(float(np.nanmean(
                prediction.uncertainty[objects])), 5) if objects.any() else 0.0
        # what the next frame inherits: this frame's clicks that landed (none: the objects left)
        if own or carry:
            carry = [(_world(frame.xyz[c.point_index][None].astype(np.float64), frame.pose)[0],
                      c.object_id) for c in annotation.clicks]
        rows.append(row)
        bar.set_postfix(frame=name)
    _score(rows)
    write_triage(folder, rows)
    errors = [row for row in rows if row["error"]]
    if errors:
        log(f"npiseg-annotate triage: {len(errors)} frame(s) unusable, ranked last: "
            + "; ".join(f"{r['frame']}: {r['error']}" for r in errors[:5]))
    if not any(row["carried_clicks"] or row["own_clicks"] for row in rows):
        log("npiseg-annotate triage: no frame has clicks in this session folder, so frames are "
            "ranked by novelty only; label a frame in the browser tool and triage again to rank "
            "by the uncertainty of carried-over objects")
    return rows


def _accepted_clicks(source: FrameSource, index: int,
                     folder: Path) -> list[tuple[np.ndarray, int]]:
    """The saved clicks of an accepted frame (world positions, object ids), without encoding
    it; [] when it cannot be read or has none."""
    from npiseg_ros.io.autosave import cloud_fingerprint, recover_autosave

    try:
        frame = source.frame(index)
    except (FrameError, ValueError):
        return []
    record, _ = recover_autosave(folder / "autosave" / source.names[index],
                                 cloud_fingerprint(frame.xyz))
    if record is None:
        return []
    return [(_world(frame.xyz[c.point_index][None].astype(np.float64), frame.pose)[0],
             c.object_id) for c in record.clicks if 0 <= c.point_index < len(frame.xyz)]


def _score(rows: list[dict]) -> None:
    uncertainties = [r["object_uncertainty"] for r in rows if r["object_uncertainty"] != ""]
    scale = max(uncertainties, default=0.0) or 1.0
    for row in rows:
        if row["error"]:
            row["score"] = -math.inf
            continue
        if row["status"] == "accepted":  # after every scored frame, before unusable ones
            row["score"] = -1e9
            continue
        score = float(row["novelty"])
        if row["object_uncertainty"] != "":
            score += float(row["object_uncertainty"]) / scale
        if row["carried_clicks"]:
            score += row["missed_clicks"] / row["carried_clicks"]
        row["score"] = round(score, 5)
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["score"], i))
    for rank, i in enumerate(order, 1):
        rows[i]["rank"] = rank
    for row in rows:
        if row["error"] or row["status"] == "accepted":
            row["score"] = ""


def write_triage(folder: Path, rows: list[dict]) -> None:
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(folder / "triage.csv", text.getvalue().encode(), mode=0o644)
    _plot(folder / "triage.png", rows)


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = np.arange(len(rows))
    value = lambda key: np.array([float(r[key]) if r[key] != "" else np.nan for r in rows])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    score = value("score")
    colours = ["#c03030" if r["error"] else "#3070c0" for r in rows]
    top.bar(index, np.nan_to_num(score, nan=0.0), color=colours)
    for i, row in enumerate(rows):
        if row["error"]:
            top.annotate("unusable", (i, 0), rotation=90, fontsize=7, color="#c03030",
                         va="bottom", ha="center")
    top.set_ylabel("attention score")
    top.set_title("npiseg-annotate triage (higher = look first; red = unusable frame)")
    bottom.plot(index, value("novelty"), ".-", label="novelty (new content)")
    bottom.plot(index, value("object_uncertainty") / np.nanmax(
        np.append(value("object_uncertainty"), 1e-12)), label="object mean uncertainty (/ max)")
    carried = value("carried_clicks")
    missed = value("missed_clicks")
    with np.errstate(invalid="ignore", divide="ignore"):
        bottom.plot(index, np.where(carried > 0, missed / carried, np.nan),
                    "o-", markersize=4, label="carried clicks on no point (fraction)")
    bottom.set_xlabel("frame (source order)")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".tmp.png"), dpi=90)
    plt.close(fig)
    path.with_suffix(".tmp.png").replace(path)

#!/usr/bin/env python3
"""How far the FIRST click on a car leaks into the scene (issue 20, "the network learned to leak").

For every car of the SemanticKITTI validation sweeps (``semkitti_*.npz``; ``things`` targets of
``npiseg_ros.eval.targets``, so a car is the points of its instance that carry its own class,
plus pieces of car points without an instance; a car = a target whose class name contains
"car", e.g. ``car``, ``moving-car``) the simulated user clicks once, where the evaluation's
simulator puts the first click (the object's deepest point on the model's voxels), and the model
predicts. Per car: its points, the points labelled as it, IoU, and the share of the labelled
points whose semantic class is not a car, with the leak broken down by semantic class (every
labelled point outside the car; other cars count under their class, never as non-car).

    .venv/bin/python scripts/first_click_leak.py --out benchmarks/results/first_click_leak.json
    .venv/bin/python scripts/first_click_leak.py --prior-alone --out /tmp/leak_prior.json

The model is the shipped default (``--checkpoint`` for another); ``--prior-alone`` evaluates
its geodesic prior alone (correction gate 0, ``npiseg-eval --baseline prior``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from npiseg_ros.core.errors import NPISegError
from npiseg_ros.eval.cli import build_segmenter
from npiseg_ros.eval.cloud import DatasetFormatError, Sample
from npiseg_ros.eval.interactive import Segmenter, run_interactive
from npiseg_ros.eval.readers import read_cloud
from npiseg_ros.eval.targets import read_scan_semantics, scan_targets
from npiseg_ros.resources import PACKAGE_ROOT, shipped_checkpoint

DEFAULT_DATA = PACKAGE_ROOT.parent / "shared" / "data" / "real" / "lidar" / "val"
CAR_WORD = "car"
LEAK_LIMIT = 0.10
"""Issue 20's bar: a first click labels at most this share of non-car points."""


def _point_class_names(semantic: np.ndarray, names: list[str]) -> np.ndarray:
    """(N,) object array: each point's semantic class name ("unlabelled" for id -1 / unnamed)."""
    table = np.array([name or "unlabelled" for name in names] + ["unlabelled"], dtype=object)
    return table[np.where((semantic >= 0) & (semantic < len(names)), semantic, len(names))]


def car_leaks(path: Path, segmenter: Segmenter, voxel_size: float) -> list[dict[str, Any]]:
    """One row per car target of the scan at ``path`` (see the module docstring).

    Args:
        path: a real-scan ``.npz`` with ``semantic`` / ``semantic_names``.
        segmenter: an evaluation ``Segmenter`` (``build_segmenter``).
        voxel_size: metres, the voxels the simulated user clicks on (the model's).

    Returns:
        Rows with ``file``, ``target`` (id among the things targets), ``instance`` (the file's
        instance id under it, 0 for a piece without one), ``class``, ``points``,
        ``predicted_points``, ``iou``, ``not_car_share`` (fraction of the predicted points),
        ``leak`` (class -> predicted points outside the car) and ``click_point`` (index), or
        ``skipped`` with the reason.
    """
    semantics = read_scan_semantics(path)
    if not semantics.has_semantics:
        raise DatasetFormatError(f"{path}: no semantic labels; the leak needs them")
    raw = read_cloud(path)
    cloud = scan_targets(raw, semantics, "things")
    classes = _point_class_names(semantics.semantic, semantics.names)
    not_car = np.array([CAR_WORD not in name.lower() for name in classes])
    rows: list[dict[str, Any]] = []
    reuse = False
    for target in cloud.things:
        name = cloud.names.get(target, "")
        if CAR_WORD not in name.lower():
            continue
        truth = cloud.labels == target
        instances = raw.labels[truth]
        row: dict[str, Any] = {"file": path.name, "target": int(target),
                               "instance": int(np.bincount(instances).argmax()),
                               "class": name, "points": int(truth.sum())}
        sample = Sample(name=f"{path.stem}_{target}", scene=path.stem, cloud=cloud,
                        object_ids=(int(target),))
        try:
            result = run_interactive(segmenter, sample, max_clicks_per_object=1, mode="single",
                                     voxel_size=voxel_size, reuse_cloud=reuse,
                                     keep_prediction=True)
        except DatasetFormatError as error:  # a car with no point the simulator sees
            rows.append({**row, "skipped": str(error)})
            continue
        reuse = True
        predicted = result.final_labels == 1
        count = int(predicted.sum())
        outside = predicted & ~truth
        row.update(predicted_points=count, iou=float(result.curve.scores[-1]),
                   not_car_share=float((predicted & not_car).sum() / count) if count else 0.0,
                   leak=dict(Counter(classes[outside].tolist()).most_common()),
                   click_point=int(result.clicks[0]["point_index"]))
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and means over the cars that were clicked."""
    done = [r for r in rows if "skipped" not in r]
    shares = [r["not_car_share"] for r in done]
    leak = Counter()
    for row in done:
        leak.update(row["leak"])
    return {"cars": len(done), "skipped": len(rows) - len(done),
            "mean_iou": float(np.mean([r["iou"] for r in done])) if done else None,
            "median_iou": float(np.median([r["iou"] for r in done])) if done else None,
            "mean_not_car_share": float(np.mean(shares)) if done else None,
            "max_not_car_share": float(np.max(shares)) if done else None,
            "not_car_limit": LEAK_LIMIT,
            "cars_over_limit": int(sum(s > LEAK_LIMIT for s in shares)),
            "leak_points_by_class": dict(leak.most_common())}


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'file':<28}{'car':>5}{'class':>12}{'points':>8}{'labelled':>10}{'IoU':>7}"
             f"{'non-car':>9}  leak (points by class)"]
    for r in rows:
        head = f"{r['file'][:27]:<28}{r['target']:>5}{r['class'][:11]:>12}{r['points']:>8}"
        if "skipped" in r:
            lines.append(f"{head}  skipped: {r['skipped']}")
            continue
        leak = ", ".join(f"{name} {n}" for name, n in list(r["leak"].items())[:5])
        lines.append(f"{head}{r['predicted_points']:>10}{100 * r['iou']:>7.1f}"
                     f"{100 * r['not_car_share']:>8.1f}%  {leak}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of real-scan .npz files (default: shared lidar/val)")
    parser.add_argument("--pattern", default="semkitti_*.npz", help="file name pattern")
    parser.add_argument("--checkpoint", help="model (default: the shipped default model)")
    parser.add_argument("--prior-alone", action="store_true",
                        help="the model's geodesic prior alone (correction gate 0)")
    parser.add_argument("--num-samples", type=int, default=10,
                        help="Monte-Carlo latent samples per decode")
    parser.add_argument("--seed", type=int, default=0, help="the model's latent draws")
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args(argv)
    files = sorted(args.data.glob(args.pattern))
    checkpoint = args.checkpoint or shipped_checkpoint() or None
    if not files:
        parser.error(f"no {args.pattern} in {args.data}")
    if checkpoint is None:
        parser.error("no shipped checkpoint found: give --checkpoint")
    try:
        segmenter, voxel_size = build_segmenter(
            checkpoint=str(checkpoint), baseline="prior" if args.prior_alone else None,
            seed=args.seed, num_samples=args.num_samples)
        rows = [row for path in files for row in car_leaks(path, segmenter, float(voxel_size))]
    except (NPISegError, ValueError, OSError) as error:
        print(f"first_click_leak: error: {error}", file=sys.stderr)
        return 2
    report = {"checkpoint": str(checkpoint), "prior_alone": args.prior_alone,
              "seed": args.seed, "num_samples": args.num_samples,
              "files": [p.name for p in files], "summary": summarize(rows), "cars": rows}
    print(format_rows(rows))
    summary = report["summary"]
    if summary["cars"]:
        print(f"{summary['cars']} cars: mean IoU {summary['mean_iou']:.3f}, mean non-car share "
              f"{summary['mean_not_car_share']:.3f}, {summary['cars_over_limit']} over "
              f"{LEAK_LIMIT:.0%} non-car")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

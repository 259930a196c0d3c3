"""Periodic validation with the paper's metrics, through ``npiseg_ros.eval``.

LiDAR folders (clouds without colour) are cut into the same 15 m crops ``npiseg-eval`` uses for
SemanticKITTI (``semantickitti_samples``), so synthetic and real LiDAR numbers are comparable;
coloured (indoor) folders use their ``val_list.json`` samples.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npiseg_ros.core.model import NPISeg3D
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.eval.cloud import Sample
from npiseg_ros.eval.evaluate import evaluate
from npiseg_ros.eval.readers import read_benchmark_scene
from npiseg_ros.eval.samples import benchmark_samples, semantickitti_samples


def validation_samples(root: str | os.PathLike, limit: int, seed: int = 0) -> list[Sample]:
    """The first ``limit`` validation samples of a benchmark folder (see module doc)."""
    root = Path(root)
    scenes = sorted(p.stem for p in (root / "scans").glob("*.ply")
                    if not p.stem.endswith("_names"))
    first = read_benchmark_scene(root, scenes[0])
    colourless = first.colors is None or not np.any(first.colors)
    if not colourless:
        return list(_take(benchmark_samples(root, "multi"), limit))
    samples: list[Sample] = []
    rng = np.random.default_rng(seed)
    for scene in scenes:
        cloud = read_benchmark_scene(root, scene)
        crops = semantickitti_samples(cloud, scene, "multi", seed=seed)
        # a few crops per scan, spread over the scan's objects, rather than one scan's all
        for index in rng.permutation(len(crops))[:2]:
            samples.append(crops[int(index)])
        if len(samples) >= limit:
            break
    return samples[:limit]


def _take(iterable, limit: int) -> list:
    out = []
    for item in iterable:
        if len(out) >= limit:
            break
        out.append(item)
    return out


def validate(model: NPISeg3D, samples: list[Sample], *, max_clicks: int,
             num_samples: int = 2, seed: int = 0) -> dict[str, float]:
    """IoU@k / NoC@q of ``model`` on ``samples`` (budget ``max_clicks`` per object).

    The model is left in eval mode; the caller switches it back to training.
    """
    session = SegmentationSession(model, num_samples=num_samples, seed=seed)
    report = evaluate(session, samples, mode="multi", max_clicks_per_object=max_clicks,
                      voxel_size=model.config.voxel_size)
    return report.summary()

"""PNG figures of an evaluation: mIoU-vs-clicks curves and top-down sample renderings.

matplotlib is imported lazily (only ``npiseg-eval --plots`` needs it), with the Agg backend.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["plot_curves", "plot_sample"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict[str, np.ndarray], path: str | os.PathLike,
                title: str = "mIoU vs clicks per object") -> None:
    """One line per name: ``curves[name]`` is (K,) mean IoU in [0, 1] at 1..K clicks/object."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, values in curves.items():
        values = np.asarray(values, dtype=float)
        axis.plot(np.arange(1, len(values) + 1), 100 * values, marker="o", markersize=3,
                  label=name)
    axis.set_xlabel("clicks per object")
    axis.set_ylabel("mIoU (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def plot_sample(xyz: np.ndarray, gt: np.ndarray, predicted: np.ndarray,
                uncertainty: np.ndarray, click_indices: list[int], path: str | os.PathLike,
                title: str = "", max_points: int = 60000, margin: float = 3.0) -> None:
    """Three top-down (x-y) panels: prediction, errors, uncertainty; clicks as black crosses.

    Args:
        xyz: (N, 3) metres. gt, predicted: (N,) int labels (0 = background).
        uncertainty: (N,) float (NaN drawn grey). click_indices: clicked point indices.
        path: PNG file. max_points: random subsample drawn (seed 0) for speed.
        margin: the view is the box around targets, predicted objects and clicks plus this
            many metres (small objects in a large LiDAR crop stay visible).
    """
    plt = _pyplot()
    rng = np.random.default_rng(0)
    shown = (np.arange(len(xyz)) if len(xyz) <= max_points
             else np.sort(rng.choice(len(xyz), max_points, replace=False)))
    x, y = xyz[shown, 0], xyz[shown, 1]
    focus = np.flatnonzero((gt > 0) | (predicted > 0))
    focus = np.concatenate([focus, np.asarray(click_indices, dtype=np.int64)])
    low = xyz[focus, :2].min(axis=0) - margin if focus.size else xyz[:, :2].min(axis=0)
    high = xyz[focus, :2].max(axis=0) + margin if focus.size else xyz[:, :2].max(axis=0)
    centre, half = (low + high) / 2, float((high - low).max()) / 2  # square view
    low, high = centre - half, centre + half
    in_view = np.all((xyz[shown, :2] >= low) & (xyz[shown, :2] <= high), axis=1).sum()
    size = float(np.clip(15000.0 / max(int(in_view), 1), 0.5, 6.0))  # sparse views: bigger dots
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.5), dpi=110, sharex=True, sharey=True)
    palette = plt.get_cmap("tab20")
    labels = predicted[shown]
    colors = np.where((labels > 0)[:, None], palette((labels % 20) / 19.999),
                      np.array([0.8, 0.8, 0.8, 1.0]))
    axes[0].scatter(x, y, c=colors, s=size, linewidths=0)
    axes[0].set_title("prediction")
    wrong = predicted[shown] != gt[shown]
    axes[1].scatter(x[~wrong], y[~wrong], c="0.8", s=size, linewidths=0)
    axes[1].scatter(x[wrong], y[wrong], c="tab:red", s=1.5 * size, linewidths=0)
    axes[1].set_title(f"errors ({100 * np.mean(predicted != gt):.1f}% of points)")
    values = np.asarray(uncertainty, dtype=float)[shown]
    finite = np.isfinite(values)
    axes[2].scatter(x[~finite], y[~finite], c="0.8", s=size, linewidths=0)
    image = axes[2].scatter(x[finite], y[finite], c=values[finite], cmap="magma", s=size,
                            linewidths=0)
    figure.colorbar(image, ax=axes[2], fraction=0.046)
    axes[2].set_title("uncertainty")
    for axis in axes:
        clicked = xyz[np.asarray(click_indices, dtype=np.int64)]
        axis.set_xlim(low[0], high[0])
        axis.set_ylim(low[1], high[1])
        axis.scatter(clicked[:, 0], clicked[:, 1], marker="x", c="k", s=25, linewidths=1)
        axis.set_aspect("equal")
        axis.set_xlabel("x (m)")
    axes[0].set_ylabel("y (m)")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)

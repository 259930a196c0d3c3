"""Compare synthetic LiDAR scans with a real KITTI-format scan (point count, range, z,
intensity, class shares) and print a markdown table.

    python -m npiseg_train.synth.compare \
        --real ../shared/data/semantickitti/sequences/00/velodyne/000000.bin \
        --num 20 --first-seed 10000

The real scan is read only to compute these statistics (never for training).
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from npiseg_train.synth.lidar import generate_lidar_scene

RANGE_BINS = ((0, 5), (5, 10), (10, 20), (20, 40), (40, 80))
Z_BINS = ((-9, -2), (-2, -1.5), (-1.5, -1), (-1, 0), (0, 1), (1, 30))


def scan_statistics(xyz: np.ndarray, intensity: np.ndarray) -> dict[str, float]:
    """Named statistics of one scan.

    Args:
        xyz: (N, 3) points in the sensor frame, metres.
        intensity: (N,) return intensities.

    Returns:
        statistic name -> value (counts, percentiles in metres, shares in [0, 1]).
    """
    ranges = np.linalg.norm(xyz, axis=1)
    stats: dict[str, float] = {"points": float(len(xyz))}
    for q in (5, 25, 50, 75, 95):
        stats[f"range p{q} (m)"] = float(np.percentile(ranges, q))
    for lo, hi in RANGE_BINS:
        stats[f"share of range {lo}–{hi} m"] = float(np.mean((ranges >= lo) & (ranges < hi)))
    for q in (5, 25, 50, 75, 95):
        stats[f"z p{q} (m)"] = float(np.percentile(xyz[:, 2], q))
    for lo, hi in Z_BINS:
        stats[f"share of z in [{lo}, {hi}) m"] = float(np.mean((xyz[:, 2] >= lo)
                                                              & (xyz[:, 2] < hi)))
    for q in (10, 50, 90):
        stats[f"intensity p{q}"] = float(np.percentile(intensity, q))
    return stats


def comparison_table(real: np.ndarray, num: int, first_seed: int) -> str:
    """Markdown table: real scan (M, 4) float32 [x y z intensity] vs ``num`` synthetic scans."""
    reference = scan_statistics(real[:, :3], real[:, 3])
    scenes = [generate_lidar_scene(first_seed + i) for i in range(num)]
    synthetic = [scan_statistics(s.xyz, s.intensity) for s in scenes]
    lines = ["| statistic | real | synthetic mean ± std | synthetic min – max |",
             "|---|---|---|---|"]
    for key, value in reference.items():
        values = np.array([s[key] for s in synthetic])
        fmt = "{:.0f}" if key == "points" else "{:.3f}" if key.startswith("share") else "{:.2f}"
        lines.append(f"| {key} | {fmt.format(value)} | {fmt.format(values.mean())} ± "
                     f"{fmt.format(values.std())} | {fmt.format(values.min())} – "
                     f"{fmt.format(values.max())} |")
    shares: Counter = Counter()
    for scene in scenes:
        for instance, count in zip(*np.unique(scene.labels, return_counts=True)):
            shares[scene.class_names[int(instance)]] += int(count)
    total = sum(shares.values())
    lines.append("")
    lines.append("synthetic class shares: " + ", ".join(
        f"{name} {count / total:.3f}" for name, count in shares.most_common()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", required=True, help="KITTI .bin scan (float32 N x 4)")
    parser.add_argument("--num", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=10_000)
    args = parser.parse_args(argv)
    real = np.fromfile(Path(args.real), dtype=np.float32).reshape(-1, 4)
    print(comparison_table(real, args.num, args.first_seed))


if __name__ == "__main__":
    main()

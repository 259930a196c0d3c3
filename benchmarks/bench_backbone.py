"""Backbone speed on synthetic scenes: inference forward and a training step.

    .venv/bin/python benchmarks/bench_backbone.py --threads 2 --repeats 5

Scenes (generated here with numpy, fixed seeds):
- ``room``: 150k coloured points on the floor, walls, ceiling and furniture boxes of an
  8 × 6 × 3 m room, voxelised at 5 cm (≈74k voxels);
- ``lidar``: a 64-beam spinning-LiDAR-like scan (120k points: ground, buildings, cars, poles),
  voxelised at 5 cm.
Prints a table and writes JSON: wall-clock milliseconds (median and minimum over ``--repeats``;
the minimum is the better estimate on a machine shared with other work) and the minimum process
CPU time (all threads together; with ``--threads 1`` it is robust to other load).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from npiseg_ros.core.backbone import build_backbone  # noqa: E402

VOXEL_SIZE_M = 0.05


def _box_surface(rng: np.random.Generator, low, high, count: int) -> np.ndarray:
    """``count`` points uniformly on the surface of an axis-aligned box (metres)."""
    low, high = np.asarray(low, float), np.asarray(high, float)
    size = high - low
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]] * 2)
    face = rng.choice(6, size=count, p=areas / areas.sum())
    points = low + rng.random((count, 3)) * size
    axis = face % 3
    points[np.arange(count), axis] = np.where(face < 3, low[axis], high[axis])
    return points


def make_room(num_points: int = 150_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) metres and colours (N, 3) in [0, 1] of a furnished room."""
    rng = np.random.default_rng(seed)
    boxes = [((0, 0, 0), (8, 6, 3), (0.8, 0.78, 0.7))]  # the room shell: floor, walls, ceiling
    for _ in range(14):  # tables, cabinets, chairs ...
        size = rng.uniform([0.4, 0.4, 0.4], [2.0, 1.2, 1.8])
        corner = rng.uniform([0.2, 0.2, 0.0], [7.8 - size[0], 5.8 - size[1], 0.0])
        boxes.append((corner, corner + size, rng.uniform(0.1, 0.9, 3)))
    areas = np.array([2 * ((h[0] - l[0]) * (h[1] - l[1]) + (h[0] - l[0]) * (h[2] - l[2])
                           + (h[1] - l[1]) * (h[2] - l[2])) for l, h, _ in
                      [(np.asarray(a, float), np.asarray(b, float), c) for a, b, c in boxes]])
    counts = rng.multinomial(num_points, areas / areas.sum())
    xyz, rgb = [], []
    for (low, high, colour), count in zip(boxes, counts):
        xyz.append(_box_surface(rng, low, high, count))
        rgb.append(np.clip(np.asarray(colour) + rng.normal(0, 0.05, (count, 3)), 0, 1))
    return np.concatenate(xyz), np.concatenate(rgb)


def make_lidar(num_points: int = 120_000, seed: int = 1) -> np.ndarray:
    """Points (N, 3) metres of a 64-beam scan from 1.73 m above a flat ground with obstacles."""
    rng = np.random.default_rng(seed)
    beams = 64
    elevation = np.deg2rad(np.linspace(-24.9, 2.0, beams))
    azimuth = np.linspace(-np.pi, np.pi, num_points // beams, endpoint=False)
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")
    direction = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    height = 1.73
    down = direction[..., 2] < 0
    ground_range = np.where(down, height / np.maximum(-direction[..., 2], 1e-6), np.inf)
    # Building facades: range per azimuth sector; cars and poles: closer obstacles in some sectors.
    sector = ((az + np.pi) / (2 * np.pi) * 36).astype(int) % 36
    facade = rng.uniform(12, 45, 36)[sector]
    obstacle = np.where(rng.random(36)[sector] < 0.4, rng.uniform(4, 12, 36)[sector], np.inf)
    obstacle_top = rng.uniform(1.0, 4.0, 36)[sector]
    obstacle_hit = (direction[..., 2] * obstacle + height) < obstacle_top
    distance = np.minimum(ground_range, np.where(obstacle_hit, obstacle, np.inf))
    distance = np.minimum(distance, facade / np.maximum(np.cos(el), 1e-6))
    distance = distance * (1 + rng.normal(0, 0.002, distance.shape))
    points = direction * distance[..., None]
    points[..., 2] += height
    return points.reshape(-1, 3)


def voxelize(
    xyz: np.ndarray, features: np.ndarray, batch: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique 5 cm voxels; the first point of each voxel gives its features."""
    grid = np.floor(xyz / VOXEL_SIZE_M).astype(np.int64)
    _, first = np.unique(grid, axis=0, return_index=True)
    first = np.sort(first)
    coords = np.concatenate([np.full((len(first), 1), batch), grid[first]], axis=1)
    return torch.from_numpy(features[first]).float(), torch.from_numpy(coords)


def timed(function, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU milliseconds of each of ``repeats`` calls after a warm-up."""
    function()  # warm-up (allocator, first-touch)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu


def bench_forward(
    preset: str, features, coords, repeats: int, backend: str
) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    net = build_backbone(preset, features.shape[1], 128, backend=backend).eval()

    def run() -> None:
        with torch.inference_mode():
            net(features, coords)

    return timed(run, repeats)


def bench_train_step(
    preset: str, features, coords, repeats: int, backend: str
) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    net = build_backbone(preset, features.shape[1], 128, backend=backend).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        net(features, coords).square().mean().backward()
        optimizer.step()

    return timed(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--only", nargs="*", default=None, help="subset of case names to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/backbone.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    xyz, rgb = make_room()
    room = voxelize(xyz, rgb)
    scan = make_lidar()
    lidar = voxelize(scan, np.zeros_like(scan))
    scenes = {"room": room, "lidar": lidar}
    cases = [
        ("small_room_forward", bench_forward, "small", "room"),
        ("res16unet34c_room_forward", bench_forward, "res16unet34c", "room"),
        ("small_lidar_forward", bench_forward, "small", "lidar"),
        ("res16unet34c_lidar_forward", bench_forward, "res16unet34c", "lidar"),
        ("small_room_train_step", bench_train_step, "small", "room"),
    ]
    results = {
        "torch": torch.__version__,
        "threads": args.threads,
        "backend": args.backend,
        "cpu": platform.processor() or platform.machine(),
        "voxels": {name: len(value[1]) for name, value in scenes.items()},
        "points": {"room": len(xyz), "lidar": len(scan)},
        "median_ms": {},
        "min_ms": {},
        "min_cpu_ms": {},
    }
    print(f"room: {len(xyz)} points -> {len(room[1])} voxels; lidar: {len(scan)} points -> "
          f"{len(lidar[1])} voxels; threads={args.threads}, backend={args.backend}")
    for name, bench, preset, scene_name in cases:
        if args.only and name not in args.only:
            continue
        features, coords = scenes[scene_name]
        times, cpu = bench(preset, features, coords, args.repeats, args.backend)
        results["median_ms"][name] = round(statistics.median(times), 1)
        results["min_ms"][name] = round(min(times), 1)
        results["min_cpu_ms"][name] = round(min(cpu), 1)
        print(f"{name:28s} median {statistics.median(times):8.1f} ms  min {min(times):8.1f} ms"
              f"  (min CPU time {min(cpu):8.1f} ms)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

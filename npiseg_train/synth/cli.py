"""Write a synthetic dataset in the benchmark format of ``npiseg_ros.eval``.

    python -m npiseg_train.synth.cli --kind lidar --num 100 --seed 0 --out data/synth_lidar \
        [--samples-per-scene 3] [--workers 2] [--preview previews/ --preview-count 4] \
        [--lidar-model {hdl64,vlp32,vlp16,os128,mixed}]

Output: ``<out>/scans/<scene>.ply`` (x y z R G B label [+ intensity]),
``<out>/scans/<scene>_names.json`` (id -> class name, thing ids) and ``<out>/val_list.json``
with multi-object samples of 1..10 nearby objects. Scene i of a run gets the seed derived
from (--seed, i), so runs with different --seed never share scenes.
"""
from __future__ import annotations

import argparse
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from npiseg_train.synth.lidar import generate_lidar_scene
from npiseg_train.synth.rgbd import generate_indoor_scene
from npiseg_train.synth.scene import STUFF_CLASSES, SynthScene, nearby_object_samples
from npiseg_train.synth.sensors import LIDAR_MODELS

GENERATORS = {"indoor": generate_indoor_scene, "lidar": generate_lidar_scene}


def scene_seed(seed: int, index: int) -> int:
    """Seed of scene ``index`` of a dataset generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def scene_name(kind: str, seed: int, index: int) -> str:
    return f"{kind}_s{seed}_{index:06d}"


def make_scene(kind: str, seed: int, index: int, lidar_model: str = "hdl64") -> SynthScene:
    """Scene ``index`` of the dataset (``kind``, ``seed``); deterministic.

    Args:
        lidar_model: a key of ``LIDAR_MODELS``, or ``"mixed"`` to draw one per scene.
    """
    if kind not in GENERATORS:
        raise ValueError(f"kind must be one of {sorted(GENERATORS)}, got {kind!r}")
    name, seed_i = scene_name(kind, seed, index), scene_seed(seed, index)
    if kind == "indoor":
        return generate_indoor_scene(seed_i, name=name)
    if lidar_model == "mixed":
        models = sorted(LIDAR_MODELS)
        lidar_model = models[seed_i % len(models)]
    if lidar_model not in LIDAR_MODELS:
        raise ValueError(f"lidar_model must be 'mixed' or one of {sorted(LIDAR_MODELS)}")
    return generate_lidar_scene(seed_i, name=name, **LIDAR_MODELS[lidar_model])


def to_labelled_cloud(scene: SynthScene):
    """The scene as the evaluation package's ``LabelledCloud`` (names "class/id", thing ids)."""
    from npiseg_ros.eval.cloud import LabelledCloud

    return LabelledCloud(
        xyz=scene.xyz, labels=scene.labels, colors=scene.colors, intensity=scene.intensity,
        names={i: f"{name}/{i}" for i, name in scene.class_names.items()},
        things=tuple(i for i, name in scene.class_names.items() if name not in STUFF_CLASSES))


def scene_samples(scene: SynthScene, count: int, seed: int) -> list[list[int]]:
    """Up to ``count`` multi-object samples with distinct sizes (the val-list format keys a
    sample by scene and object count)."""
    rng = np.random.default_rng(seed)
    samples: list[list[int]] = []
    sizes: set[int] = set()
    for sample in nearby_object_samples(scene, count * 6, rng):
        if len(sample) not in sizes:
            sizes.add(len(sample))
            samples.append(sample)
        if len(samples) == count:
            break
    return samples


def _write_one(job: tuple[str, int, int, str, int, str]) -> tuple[str, list[list[int]], float]:
    from npiseg_ros.eval.writers import write_benchmark_scene

    kind, seed, index, out, samples_per_scene, lidar_model = job
    start = time.process_time()  # CPU time: not inflated by other processes on the machine
    scene = make_scene(kind, seed, index, lidar_model)
    elapsed = time.process_time() - start
    write_benchmark_scene(out, scene.name, to_labelled_cloud(scene))
    samples = scene_samples(scene, samples_per_scene, scene_seed(seed, index) + 1)
    return scene.name, samples, elapsed


def write_dataset(kind: str, num: int, seed: int, out: str | Path, samples_per_scene: int = 3,
                  workers: int = 1, preview: str | Path | None = None,
                  preview_count: int = 4, lidar_model: str = "hdl64") -> Path:
    """Generate ``num`` scenes of ``kind`` and write them (+ val_list.json) under ``out``.

    Returns:
        the path of the written ``val_list.json``.
    """
    from npiseg_ros.eval.writers import write_val_list

    jobs = [(kind, seed, i, str(out), samples_per_scene, lidar_model) for i in range(num)]
    start = time.perf_counter()
    if workers > 1:
        with Pool(workers) as pool:
            results = pool.map(_write_one, jobs, chunksize=1)
    else:
        results = [_write_one(job) for job in jobs]
    generate_s = sum(r[2] for r in results)
    print(f"{num} {kind} scenes in {time.perf_counter() - start:.1f} s wall; generation "
          f"{num / max(generate_s, 1e-9):.2f} scenes/s per core (CPU time)")
    path = write_val_list(out, [(name, ids) for name, samples, _ in results for ids in samples])
    if preview is not None:
        from npiseg_train.synth.preview import save_preview

        for i in range(min(preview_count, num)):
            name = scene_name(kind, seed, i)
            save_preview(make_scene(kind, seed, i, lidar_model), Path(preview) / f"{name}.png")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=sorted(GENERATORS), required=True)
    parser.add_argument("--num", type=int, required=True, help="number of scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="benchmark root folder to write")
    parser.add_argument("--samples-per-scene", type=int, default=3,
                        help="multi-object samples per scene in val_list.json")
    parser.add_argument("--workers", type=int, default=1, help="generator processes")
    parser.add_argument("--preview", default=None, help="folder for PNG previews")
    parser.add_argument("--preview-count", type=int, default=4)
    parser.add_argument("--lidar-model", default="hdl64",
                        choices=sorted(LIDAR_MODELS) + ["mixed"],
                        help="beam layout of LiDAR scenes ('mixed': one drawn per scene)")
    args = parser.parse_args(argv)
    path = write_dataset(args.kind, args.num, args.seed, args.out, args.samples_per_scene,
                         args.workers, args.preview, args.preview_count, args.lidar_model)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

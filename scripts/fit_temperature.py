#!/usr/bin/env python3
"""Fit a model's calibration temperature on TRAINING scans and write a calibrated checkpoint.

The simulated user of the evaluation (oracle clicks, multi-object protocol) segments samples of
the training scans; after every click the decode is repeated at each candidate temperature T
with the same latent draws (labels do not depend on T, so every T sees the same clicks), and
the expected calibration error of the predicted label's probability is measured on the points
that are a target or predicted as one (``npiseg_ros.eval.evaluate``'s "ECE objects"). The T
with the lowest mean ECE is written into a copy of the checkpoint
(``ModelConfig.calibration_temperature``); the fit's numbers go into its metadata.

    python scripts/fit_temperature.py --checkpoint checkpoints/npiseg_prior_10cm.safetensors \
        --out runs/calibrated.safetensors --json benchmarks/results/temperature_fit.json

Never point ``--data`` at val/: the calibration is part of the model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from npiseg_ros.core.checkpoint import load_model, read_checkpoint, save_checkpoint
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.eval.interactive import run_interactive
from npiseg_ros.eval.readers import read_cloud
from npiseg_ros.eval.samples import scan_samples
from npiseg_ros.eval.targets import read_scan_semantics, scan_targets
from npiseg_ros.eval.uncertainty import expected_calibration_error

REPO = Path(__file__).resolve().parents[1]
TEMPERATURES = (0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0)


class RecordingSession(SegmentationSession):
    """A session that, after each decode, also decodes at every candidate temperature with
    the same latent draws and keeps each voxel's probability of the predicted label."""

    def __init__(self, *args, temperatures: tuple[float, ...], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.temperatures = temperatures
        self.records: list[np.ndarray] = []   # per decode: (len(T), V) confidences
        self.labels: list[np.ndarray] = []    # per decode: (V,) predicted object ids

    def _run_model(self, model, scene, clicks, previous, generator):
        output = super()._run_model(model, scene, clicks, previous, generator)
        labels = output.logits.argmax(dim=1)
        labels[clicks.voxels] = clicks.labels
        rows = []
        for temperature in self.temperatures:
            again = torch.Generator(device=self.device).manual_seed(self.seed)
            tempered = model.decode(scene, clicks, previous, num_samples=self.num_samples,
                                    generator=again, uncertainty=self.uncertainty,
                                    latents=self.latents, scene_weight=self.scene_weight,
                                    temperature=temperature)
            rows.append(tempered.probabilities.gather(1, labels.unsqueeze(1)).squeeze(1))
        self.records.append(torch.stack(rows).float().cpu().numpy())
        # every target gets its first click in round 0, in order: model label m = object id m
        self.labels.append(labels.cpu().numpy())
        return output


def fit(checkpoint: str, data: Path, targets: list[str], every: int, max_clicks: int,
        temperatures: tuple[float, ...]) -> dict:
    model = load_model(checkpoint)
    files = sorted(p for p in data.iterdir() if p.suffix == ".npz")[::every]
    eces: list[np.ndarray] = []  # per prediction: (len(T),)
    samples = 0
    start = time.perf_counter()
    for path in files:
        for kind in targets:
            cloud = scan_targets(read_cloud(path), read_scan_semantics(path), kind)
            for sample in scan_samples(cloud, path.stem, "multi"):
                session = RecordingSession(model, device="cpu", temperatures=temperatures)
                result = run_interactive(session, sample, max_clicks_per_object=max_clicks,
                                         voxel_size=session.voxel_size_for(None),
                                         keep_prediction=False)
                samples += 1
                gt = np.zeros(cloud.num_points, np.int64)
                for label, object_id in enumerate(sample.object_ids, start=1):
                    gt[cloud.labels == object_id] = label
                point_to_voxel = session.point_to_voxel
                if (point_to_voxel < 0).any():
                    raise ValueError(f"{path}: the training scans have no dropped points")
                for record, voxel_labels in zip(session.records, session.labels):
                    labels = voxel_labels[point_to_voxel]
                    decided = (gt > 0) | (labels > 0)
                    correct = labels == gt
                    confidences = record[:, point_to_voxel]
                    eces.append(np.array([expected_calibration_error(c[decided],
                                                                     correct[decided])
                                          for c in confidences]))
                del result
    table = np.stack(eces)
    mean = table.mean(axis=0)
    best = int(np.argmin(mean))
    return {"checkpoint": str(checkpoint), "data": str(data), "targets": targets,
            "files": [p.name for p in files], "samples": samples,
            "predictions": int(table.shape[0]), "max_clicks_per_object": max_clicks,
            "temperatures": list(temperatures), "ece_objects_mean": mean.tolist(),
            "temperature": temperatures[best], "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/real/lidar/train"))
    parser.add_argument("--targets", nargs="+", default=["things", "stuff"])
    parser.add_argument("--every", type=int, default=3, help="use every N-th training file")
    parser.add_argument("--max-clicks", type=int, default=10, help="clicks per object")
    parser.add_argument("--out", help="write the calibrated checkpoint here")
    parser.add_argument("--json", help="write the fit's numbers here")
    args = parser.parse_args()
    if "/val" in str(Path(args.data).resolve()):
        parser.error("calibration is fitted on training scans only, never on val/")
    torch.set_num_threads(1)
    result = fit(args.checkpoint, Path(args.data), args.targets, args.every, args.max_clicks,
                 TEMPERATURES)
    for temperature, value in zip(result["temperatures"], result["ece_objects_mean"]):
        print(f"T {temperature:4.2f}  ECE objects {value:.4f}")
    print(f"best T {result['temperature']} over {result['predictions']} predictions of "
          f"{result['samples']} samples ({result['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.out:
        config, _, metadata = read_checkpoint(args.checkpoint)
        model = load_model(args.checkpoint)
        model.config = dataclasses.replace(config,
                                           calibration_temperature=result["temperature"])
        save_checkpoint(args.out, model, {**metadata, "calibration": result})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Evaluate a trained checkpoint and the geometric baseline on the same validation samples.

    python -m npiseg_train.evaluate_run --checkpoint runs/train_joint/model.safetensors \
        --val-root runs/npiseg_train_data/val_lidar --samples 8 --out runs/eval/synth_lidar.json

Samples come from ``npiseg_train.validation.validation_samples`` (synthetic LiDAR scans cut
into the 15 m crops ``npiseg-eval`` uses for SemanticKITTI; indoor folders use their
``val_list.json``), so the numbers are comparable with the real-scan evaluation. For real
SemanticKITTI use ``npiseg-eval --format semantickitti`` directly.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from npiseg_ros.core.checkpoint import load_model
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.eval.baselines import build_baseline
from npiseg_ros.eval.evaluate import evaluate, format_table, report_to_json
from npiseg_train.validation import validation_samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--val-root", required=True, help="benchmark-format folder")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--num-samples", type=int, default=10, help="MC latent samples")
    parser.add_argument("--baseline", default="graph", help="baseline name, or 'none'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    samples = validation_samples(args.val_root, args.samples)
    model = load_model(args.checkpoint)
    segmenters = {"npiseg": (SegmentationSession(model, num_samples=args.num_samples, seed=0),
                             model.config.voxel_size)}
    if args.baseline != "none":
        baseline = build_baseline(args.baseline)
        segmenters[args.baseline] = (baseline, baseline.voxel_size)
    results = {}
    for name, (segmenter, voxel_size) in segmenters.items():
        start = time.perf_counter()
        report = evaluate(segmenter, samples, mode="multi",
                          max_clicks_per_object=args.max_clicks, voxel_size=voxel_size)
        seconds = time.perf_counter() - start
        print(f"== {name} on {args.val_root} ({len(samples)} samples, {seconds:.0f} s)")
        print(format_table(report), flush=True)
        results[name] = report_to_json(report, {"checkpoint": args.checkpoint,
                                                "val_root": args.val_root,
                                                "segmenter": name, "seconds": seconds})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

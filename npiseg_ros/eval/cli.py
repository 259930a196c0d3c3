"""``npiseg-eval``: the field's interactive-segmentation benchmark on a dataset folder.

Example::

    npiseg-eval --data /data/kitti --format semantickitti --mode multi --baseline graph \
        --max-clicks 20 --out results.json --plots plots/

argparse stays here; the library gets plain keyword arguments (``run_evaluation``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from npiseg_ros.core.errors import NPISegError
from npiseg_ros.eval.baselines import BASELINES, build_baseline
from npiseg_ros.resources import shipped_checkpoint, shipped_rgb_checkpoint
from npiseg_ros.eval.evaluate import evaluate, format_table, report_to_json
from npiseg_ros.eval.cloud import Sample
from npiseg_ros.eval.interactive import Segmenter
from npiseg_ros.eval.samples import dataset_samples

__all__ = ["main", "run_evaluation", "build_segmenter"]


def build_segmenter(*, checkpoint: str | None = None, baseline: str | None = None,
                    device: str = "cpu", seed: int = 0, num_samples: int = 10,
                    mc_dropout: int = 0,
                    rgb_checkpoint: str | None = None
                    ) -> tuple[Segmenter, float | Callable[[Sample], float]]:
    """The segmenter to evaluate and the voxel size (metres) its simulator should use: a
    number, or with ``rgb_checkpoint`` a function of the sample (the voxel size of the model
    the session picks for it, as the two models may differ).

    Exactly one of ``checkpoint`` (a safetensors checkpoint, loaded without unpickling) and
    ``baseline`` (a name in ``BASELINES``) must be given. ``rgb_checkpoint`` adds a second
    model for scans with colours (the session's ``rgb_model``), as the node does with
    ``checkpoint: auto``. ``mc_dropout`` > 0 turns a checkpoint trained with dropout into the
    MC-dropout baseline with that many passes.
    """
    if (checkpoint is None) == (baseline is None):
        raise NPISegError("give exactly one of checkpoint and baseline")
    if baseline is not None:
        segmenter = build_baseline(baseline)
        return segmenter, segmenter.voxel_size
    from npiseg_ros.core.checkpoint import load_model
    from npiseg_ros.core.session import SegmentationSession
    from npiseg_ros.eval.session_adapter import SessionSegmenter

    model = load_model(checkpoint, device=device)
    rgb_model = load_model(rgb_checkpoint, device=device) if rgb_checkpoint else None
    session = SegmentationSession(model, device=device, num_samples=num_samples, seed=seed,
                                  rgb_model=rgb_model)
    segmenter = SessionSegmenter(session, mc_dropout_samples=mc_dropout)
    if rgb_model is None:
        return segmenter, float(model.config.voxel_size)
    return segmenter, lambda sample: session.voxel_size_for(sample.cloud.colors)


def run_evaluation(*, data: str, data_format: str, mode: str, out: str,
                   checkpoint: str | None = None, baseline: str | None = None,
                   rgb_checkpoint: str | None = None, max_clicks: int = 20, seed: int = 0, plots: str | None = None,
                   limit: int | None = None, device: str = "cpu", num_samples: int = 10,
                   mc_dropout: int = 0, uncertainty_user: bool = False,
                   click_level: str = "voxel", click_coordinates: str = "grid",
                   show_progress: bool = True) -> dict[str, Any]:
    """Evaluate, write the JSON report (and PNGs), print the table; returns the report dict."""
    config = dict(data=str(data), format=data_format, mode=mode, checkpoint=checkpoint,
                  rgb_checkpoint=rgb_checkpoint, baseline=baseline, max_clicks_per_object=max_clicks, seed=seed, limit=limit,
                  device=device, num_samples=num_samples, mc_dropout=mc_dropout,
                  uncertainty_user=uncertainty_user, click_level=click_level,
                  click_coordinates=click_coordinates)
    segmenter, voxel_size = build_segmenter(checkpoint=checkpoint, baseline=baseline,
                                            device=device, seed=seed, num_samples=num_samples,
                                            mc_dropout=mc_dropout, rgb_checkpoint=rgb_checkpoint)
    samples = dataset_samples(data, data_format, mode, seed=seed)
    if limit is not None:
        samples = itertools.islice(samples, limit)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=limit, desc="samples", unit="sample", file=sys.stderr)
    try:
        report = evaluate(segmenter, samples, mode=mode, max_clicks_per_object=max_clicks,
                          uncertainty_user=uncertainty_user, click_level=click_level,
                          voxel_size=voxel_size, click_coordinates=click_coordinates,
                          keep_predictions=3 if plots else 0,
                          progress=None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    result = report_to_json(report, config)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1, allow_nan=False))
    print(format_table(report))
    quality = result["uncertainty_quality"]["oracle"]
    print(f"uncertainty: AUROC(wrong points) {quality['auroc_mean']}, ECE {quality['ece_mean']}")
    print(f"latency: predict {result['latency']['oracle']['predict_ms_median']:.1f} ms median")
    if plots:
        _write_plots(report, result, Path(plots))
    return result


def _write_plots(report: Any, result: dict[str, Any], folder: Path) -> None:
    import numpy as np

    from npiseg_ros.eval.plots import plot_curves, plot_sample

    plot_curves({user: np.array(curve, dtype=float)
                 for user, curve in result["mean_iou_curve"].items()}, folder / "miou_curve.png")
    for index, (sample, run) in enumerate(report.kept):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", sample.name)
        plot_sample(sample.cloud.xyz, sample.target_labels(), run.final_labels,
                    run.final_uncertainty, [c["point_index"] for c in run.clicks],
                    folder / f"sample_{index}_{safe}.png",
                    title=f"{sample.name}: {len(run.clicks)} clicks, "
                          f"mIoU {100 * run.curve.scores[-1]:.1f}%")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npiseg-eval", description="Interactive 3-D segmentation benchmark "
        "(AGILE3D / NPISeg3D click protocol): IoU@k, NoC@q, uncertainty quality, latency.")
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--format", required=True, choices=["benchmark", "semantickitti", "scans"])
    parser.add_argument("--mode", default="multi", choices=["multi", "single"])
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint",
                       help="safetensors checkpoint of an NPISeg3D model (default: the shipped "
                            "checkpoints/*.safetensors)")
    parser.add_argument("--rgb-checkpoint",
                        help="model for scans WITH colours (RGB-D rooms); 'none' = the "
                             "--checkpoint model for every scan (default: with no --checkpoint, "
                             "the shipped RGB-cloud model when there is one, as the node's "
                             "checkpoint: auto; else none)")
    model.add_argument("--baseline", choices=sorted(BASELINES), help="non-learned baseline")
    parser.add_argument("--max-clicks", type=int, default=20, help="clicks per object budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results.json", help="JSON report path")
    parser.add_argument("--plots", help="folder for PNG figures")
    parser.add_argument("--limit", type=int, help="evaluate only the first N samples")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--num-samples", type=int, default=10,
                        help="Monte-Carlo latent samples per decode")
    parser.add_argument("--mc-dropout", type=int, default=0,
                        help="MC-dropout passes (baseline; model trained with dropout)")
    parser.add_argument("--uncertainty-user", action="store_true",
                        help="also run the user who clicks the suggested (most uncertain) point")
    parser.add_argument("--click-level", default="voxel", choices=["voxel", "point"],
                        help="simulate clicks on voxel representatives (research code) or "
                             "all points")
    parser.add_argument("--click-coordinates", default="grid", choices=["grid", "metres"],
                        help="voxel-level distances on the integer grid (research code) or in "
                             "metres")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 on bad input, with the reason)."""
    args = _parser().parse_args(argv)
    rgb_checkpoint = None if args.rgb_checkpoint in (None, "none") else args.rgb_checkpoint
    if args.baseline is not None and rgb_checkpoint:
        _parser().error("--rgb-checkpoint goes with a model, not with --baseline")
    if args.checkpoint is None and args.baseline is None:
        args.checkpoint = shipped_checkpoint() or None
        if args.checkpoint is None:
            _parser().error("no shipped checkpoint found: give --checkpoint or --baseline")
        if args.rgb_checkpoint is None:  # the shipped default, as the node's checkpoint: auto
            rgb_checkpoint = shipped_rgb_checkpoint() or None
    kwargs = dict(data=args.data, data_format=args.format, mode=args.mode, out=args.out,
                  checkpoint=args.checkpoint, baseline=args.baseline,
                  rgb_checkpoint=rgb_checkpoint, max_clicks=args.max_clicks, seed=args.seed, plots=args.plots,
                  limit=args.limit, device=args.device, num_samples=args.num_samples,
                  mc_dropout=args.mc_dropout, uncertainty_user=args.uncertainty_user,
                  click_level=args.click_level, click_coordinates=args.click_coordinates,
                  show_progress=not args.no_progress)
    try:
        run_evaluation(**kwargs)
    except (NPISegError, ValueError, OSError) as error:
        print(f"npiseg-eval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``npiseg-eval``: the field's interactive-segmentation benchmark on a dataset folder.

Example::

    npiseg-eval --data /data/kitti --format semantickitti --mode multi --baseline graph \
        --max-clicks 20 --out results.json --plots plots/
    npiseg-eval --data ../shared/data/real/lidar/val --format scans --targets things \
        --objects-per-sample 1 3 5 10 --seeds 0 1 2 --baseline prior --out things_prior.json

``--seed`` varies two things: which samples a scans / SemanticKITTI folder gives (the anchor
object of each whole-scan sample, the object count of each SemanticKITTI crop; benchmark
folders list their samples and do not change) and the segmenter's random draws (the model's
Monte-Carlo latent samples, the MC-dropout masks). The graph baseline, the prior alone and
``--latents mean`` draw nothing: for them only the samples change. ``--seeds`` runs each seed
and reports the mean and spread of the aggregates (``evaluate.aggregate_seeds``).

argparse stays here; the library gets plain keyword arguments (``run_evaluation``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from npiseg_ros.core.errors import CheckpointError, NPISegError
from npiseg_ros.core.model import LATENT_MODES
from npiseg_ros.eval.baselines import BASELINES, MODEL_BASELINES, build_baseline
from npiseg_ros.core.router import AUTO_CHECKPOINT, resolve_checkpoint, resolve_rgb_checkpoint
from npiseg_ros.eval.evaluate import (
    aggregate_seeds, evaluate, format_seed_table, format_table, report_to_json)
from npiseg_ros.eval.cloud import Sample
from npiseg_ros.eval.interactive import Segmenter
from npiseg_ros.eval.samples import SCAN_OBJECT_COUNTS, dataset_samples
from npiseg_ros.eval.targets import TARGET_KINDS

if TYPE_CHECKING:
    from npiseg_ros.core.model import NPISeg3D

__all__ = ["main", "run_evaluation", "run_seeds", "build_segmenter", "load_models",
           "seed_report_path"]


def load_models(checkpoint: str, rgb_checkpoint: str | None, device: str
                ) -> tuple[NPISeg3D, NPISeg3D | None]:
    """The default model and the optional model for coloured scans, read from safetensors
    checkpoints without unpickling (``core.router.ModelRouter.load``: a path, or ``auto``). The
    only place the evaluation loads models."""
    from npiseg_ros.core.router import ModelRouter

    models = ModelRouter.load(checkpoint, rgb_checkpoint or "", device=device)
    return models.default, models.rgb


def build_segmenter(*, checkpoint: str | None = None, baseline: str | None = None,
                    device: str = "cpu", seed: int = 0, num_samples: int = 10,
                    mc_dropout: int = 0,
                    rgb_checkpoint: str | None = None, latents: str = "sample"
                    ) -> tuple[Segmenter, float | Callable[[Sample], float]]:
    """The segmenter to evaluate and the voxel size (metres) its simulator should use: a
    number, or with ``rgb_checkpoint`` a function of the sample (the voxel size of the model
    the session picks for it, as the two models may differ).

    A non-learned ``baseline`` (a name in ``BASELINES``) takes no checkpoint. Otherwise
    ``checkpoint`` (a safetensors checkpoint, loaded without unpickling) is required;
    ``baseline`` may then name a model baseline (``MODEL_BASELINES``: ``"prior"``, the
    model's geodesic prior alone, applied to both models). ``rgb_checkpoint`` adds a second
    model for scans with colours (the session's ``rgb_model``), as the node does with
    ``checkpoint: auto``. ``mc_dropout`` > 0 turns a checkpoint trained with dropout into the
    MC-dropout baseline with that many passes. ``latents`` (``"sample"`` / ``"mean"``) goes
    to the session: ``"mean"`` decodes once with every latent at its mean.
    """
    if baseline in BASELINES:
        if checkpoint is not None or rgb_checkpoint:
            raise NPISegError(f"--baseline {baseline} is not a model: give no checkpoint")
        if latents != "sample" or mc_dropout:
            raise NPISegError(f"--latents and --mc-dropout go with a model, not with "
                              f"--baseline {baseline}")
        segmenter = build_baseline(baseline)
        return segmenter, segmenter.voxel_size
    if baseline is not None and baseline not in MODEL_BASELINES:
        raise NPISegError(f"unknown baseline {baseline!r}; known: "
                          f"{sorted(BASELINES) + sorted(MODEL_BASELINES)}")
    if checkpoint is None:
        raise NPISegError("give a checkpoint, or a baseline that needs none")
    if baseline is not None and mc_dropout:
        raise NPISegError(f"--mc-dropout evaluates a model's decoder, which --baseline "
                          f"{baseline} switches off")
    from npiseg_ros.core.session import SegmentationSession
    from npiseg_ros.eval.session_adapter import MCDropoutSession, SessionSegmenter

    model, rgb_model = load_models(checkpoint, rgb_checkpoint, device)
    if baseline is not None:  # copies: the loaded models stay as they are
        make = MODEL_BASELINES[baseline]
        model, rgb_model = make(model), None if rgb_model is None else make(rgb_model)
    options = dict(device=device, num_samples=num_samples, seed=seed, rgb_model=rgb_model,
                   latents=latents)
    session = (MCDropoutSession(model, passes=mc_dropout, **options) if mc_dropout
               else SegmentationSession(model, **options))
    segmenter = SessionSegmenter(session)
    if rgb_model is None:
        return segmenter, float(model.config.voxel_size)
    return segmenter, lambda sample: session.voxel_size_for(sample.cloud.colors)


def run_evaluation(*, data: str, data_format: str, mode: str, out: str,
                   checkpoint: str | None = None, baseline: str | None = None,
                   rgb_checkpoint: str | None = None, max_clicks: int = 20, seed: int = 0,
                   plots: str | None = None, limit: int | None = None, device: str = "cpu",
                   num_samples: int = 10, mc_dropout: int = 0, uncertainty_user: bool = False,
                   click_level: str = "voxel", click_coordinates: str = "grid",
                   targets: str = "raw", object_counts: Sequence[int] | None = None,
                   latents: str = "sample", show_progress: bool = True) -> dict[str, Any]:
    """Evaluate, write the JSON report (and PNGs), print the table; returns the report dict.

    ``targets`` and ``object_counts`` shape the samples of a scans folder
    (``samples.dataset_samples``); ``latents`` goes to the session (``build_segmenter``).
    The report's ``config`` records every argument, the object counts actually used and the
    scans that gave no sample for the targets (``skipped_files``).
    """
    if data_format == "scans" and object_counts is None:
        object_counts = SCAN_OBJECT_COUNTS
    skipped: list[str] = []
    config = dict(data=str(data), format=data_format, mode=mode, checkpoint=checkpoint,
                  rgb_checkpoint=rgb_checkpoint, baseline=baseline,
                  max_clicks_per_object=max_clicks, seed=seed, limit=limit, device=device,
                  num_samples=num_samples, mc_dropout=mc_dropout,
                  uncertainty_user=uncertainty_user, click_level=click_level,
                  click_coordinates=click_coordinates, targets=targets,
                  objects_per_sample=None if object_counts is None else list(object_counts),
                  latents=latents, skipped_files=skipped)
    segmenter, voxel_size = build_segmenter(checkpoint=checkpoint, baseline=baseline,
                                            device=device, seed=seed, num_samples=num_samples,
                                            mc_dropout=mc_dropout, rgb_checkpoint=rgb_checkpoint,
                                            latents=latents)
    samples = dataset_samples(data, data_format, mode, seed=seed, targets=targets,
                              object_counts=object_counts, skipped=skipped)
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
    if skipped:
        print(f"no {targets} targets in: {', '.join(skipped)}", file=sys.stderr)
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


def seed_report_path(out: str | Path, seed: int) -> Path:
    """Where ``run_seeds`` writes the report of one seed: ``<out stem>_seed<N><suffix>``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_seed{seed}{out.suffix or '.json'}")


def run_seeds(*, seeds: Sequence[int], out: str, plots: str | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """``run_evaluation`` once per seed (reports at ``seed_report_path(out, seed)``, plots in
    ``<plots>/seed<N>``), then the mean and spread over the seeds (``aggregate_seeds``)
    written to ``out`` and printed; returns that aggregate.

    The aggregate's ``config`` is the runs' shared config with ``seeds`` instead of ``seed``;
    ``reports`` maps each seed to its report file.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise NPISegError(f"seeds must be distinct and at least one, got {seeds}")
    reports, paths = {}, {}
    for seed in seeds:
        paths[str(seed)] = str(seed_report_path(out, seed))
        print(f"== seed {seed}")
        reports[seed] = run_evaluation(seed=seed, out=paths[str(seed)],
                                       plots=None if plots is None else f"{plots}/seed{seed}",
                                       **kwargs)
    config = {k: v for k, v in reports[seeds[0]]["config"].items() if k != "seed"}
    config["seeds"] = seeds
    aggregate = {"config": config, "reports": paths, **aggregate_seeds(reports)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(aggregate, indent=1, allow_nan=False))
    print(format_seed_table(aggregate))
    return aggregate


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
    parser.add_argument("--checkpoint",
                        help="safetensors checkpoint of an NPISeg3D model (default: the shipped "
                             "checkpoints/*.safetensors)")
    parser.add_argument("--rgb-checkpoint",
                        help="model for scans WITH colours (RGB-D rooms); 'none' = the "
                             "--checkpoint model for every scan (default: with no --checkpoint, "
                             "the shipped RGB-cloud model when there is one, as the node's "
                             "checkpoint: auto; else none)")
    parser.add_argument("--baseline", choices=sorted(BASELINES) + sorted(MODEL_BASELINES),
                        help="graph: non-learned region growing (no checkpoint); prior: the "
                             "model's own geodesic prior alone (its correction gate at 0; the "
                             "--checkpoint model or the shipped default)")
    parser.add_argument("--targets", default="raw", choices=TARGET_KINDS,
                        help="--format scans: the objects to segment: raw = the file's "
                             "instances as stored; things = clean thing instances; stuff = "
                             "stuff classes split into connected pieces; mixed = both; "
                             "classes = one target per semantic class (eval/targets.py)")
    parser.add_argument("--objects-per-sample", type=int, nargs="+", metavar="K",
                        help="--format scans: objects per multi-object sample, one sample per "
                             "K and scan (default: " + " ".join(map(str, SCAN_OBJECT_COUNTS))
                             + ")")
    parser.add_argument("--latents", default="sample", choices=LATENT_MODES,
                        help="sample = Monte-Carlo latent samples (the method); mean = every "
                             "latent at its mean, one decode (the ablation)")
    parser.add_argument("--max-clicks", type=int, default=20, help="clicks per object budget")
    parser.add_argument("--seed", type=int,
                        help="samples of scans / SemanticKITTI folders and the model's random "
                             "draws (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="run every seed (reports <out>_seed<N>.json) and write the mean "
                             "and spread over them to --out")
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
    parser = _parser()
    args = parser.parse_args(argv)
    rgb_checkpoint = None if args.rgb_checkpoint in (None, "none") else args.rgb_checkpoint
    non_learned = args.baseline in BASELINES
    if non_learned and args.checkpoint is not None:
        parser.error(f"--checkpoint goes with a model or --baseline prior, not with "
                     f"--baseline {args.baseline}")
    if non_learned and rgb_checkpoint:
        parser.error("--rgb-checkpoint goes with a model, not with --baseline graph")
    if non_learned and args.latents != "sample":
        parser.error("--latents goes with a model, not with --baseline graph")
    if args.seed is not None and args.seeds is not None:
        parser.error("give --seed or --seeds, not both")
    if args.format != "scans" and (args.targets != "raw" or args.objects_per_sample):
        parser.error("--targets and --objects-per-sample apply to --format scans")
    if args.checkpoint is None and not non_learned:  # the shipped pair, as the node's "auto"
        try:
            args.checkpoint = str(resolve_checkpoint(AUTO_CHECKPOINT))
        except CheckpointError:
            parser.error("no shipped checkpoint found: give --checkpoint or --baseline graph")
        if args.rgb_checkpoint is None:
            found = resolve_rgb_checkpoint(AUTO_CHECKPOINT, AUTO_CHECKPOINT)
            rgb_checkpoint = None if found is None else str(found)
    kwargs = dict(data=args.data, data_format=args.format, mode=args.mode, out=args.out,
                  checkpoint=args.checkpoint, baseline=args.baseline,
                  rgb_checkpoint=rgb_checkpoint, max_clicks=args.max_clicks, plots=args.plots,
                  limit=args.limit, device=args.device, num_samples=args.num_samples,
                  mc_dropout=args.mc_dropout, uncertainty_user=args.uncertainty_user,
                  click_level=args.click_level, click_coordinates=args.click_coordinates,
                  targets=args.targets, object_counts=args.objects_per_sample,
                  latents=args.latents, show_progress=not args.no_progress)
    try:
        if args.seeds is not None:
            run_seeds(seeds=args.seeds, **kwargs)
        else:
            run_evaluation(seed=0 if args.seed is None else args.seed, **kwargs)
    except (NPISegError, ValueError, OSError) as error:
        print(f"npiseg-eval: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

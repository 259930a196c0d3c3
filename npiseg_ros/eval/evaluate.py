"""Run a segmenter over many samples and aggregate: the library behind ``npiseg-eval``."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npiseg_ros.eval.cloud import DatasetFormatError, Sample
from npiseg_ros.eval.interactive import InteractiveResult, Segmenter, run_interactive
from npiseg_ros.eval.metrics import (
    IOU_CLICKS, NOC_THRESHOLDS, iou_at, mean_curve, noc_at, summarize)

__all__ = ["EvaluationReport", "evaluate", "format_table", "report_to_json", "aggregate_seeds",
           "format_seed_table", "SEED_METRICS"]

SEED_METRICS = tuple([f"IoU@{k}" for k in IOU_CLICKS]
                     + [f"NoC@{round(q * 100)}" for q in NOC_THRESHOLDS]
                     + ["AUROC", "ECE", "ECE objects"])
"""The aggregates whose spread over simulator seeds ``aggregate_seeds`` reports."""


@dataclass
class EvaluationReport:
    """Results per simulated user (``"oracle"``, optionally ``"uncertainty"``).

    Attributes:
        results: user -> one ``InteractiveResult`` per sample, in sample order.
        kept: samples whose last prediction was kept for plots: (sample, result) pairs.
        max_clicks_per_object: the budget the runs used.
    """

    results: dict[str, list[InteractiveResult]]
    max_clicks_per_object: int
    kept: list[tuple[Sample, InteractiveResult]] = field(default_factory=list)

    def summary(self, user: str = "oracle") -> dict[str, float]:
        return summarize([r.curve for r in self.results[user]],
                         max_clicks_per_object=self.max_clicks_per_object)


def evaluate(segmenter: Segmenter, samples: Iterable[Sample], *, mode: str = "multi",
             max_clicks_per_object: int = 20, uncertainty_user: bool = False,
             click_level: str = "voxel", voxel_size: float | Callable[[Sample], float] = 0.05,
             click_coordinates: str = "grid", keep_predictions: int = 0,
             progress: Any = None) -> EvaluationReport:
    """Run the click protocol on every sample.

    Consecutive samples of the same scene reuse the encoded cloud (``reset`` instead of
    ``set_cloud``), as the session is designed to.

    Args:
        segmenter: ``Segmenter`` (session adapter or baseline).
        samples: iterable of ``Sample``; consumed once.
        mode: ``"multi"`` or ``"single"``.
        max_clicks_per_object: budget (20 in the protocol).
        uncertainty_user: also run the uncertainty-guided user on each sample.
        click_level, voxel_size, click_coordinates: see ``run_interactive``; ``voxel_size``
            may be a function of the sample (a session whose two models differ in it).
        keep_predictions: keep the last prediction of this many first samples (for plots).
        progress: optional callable ``progress(n)`` called after each sample (e.g. a tqdm
            bar's ``update``).
    """
    users = ["oracle", "uncertainty"] if uncertainty_user else ["oracle"]
    report = EvaluationReport(results={u: [] for u in users},
                              max_clicks_per_object=max_clicks_per_object)
    last_scene = None
    for sample in samples:
        keep = len(report.kept) < keep_predictions
        for user in users:
            result = run_interactive(
                segmenter, sample, max_clicks_per_object=max_clicks_per_object, mode=mode,
                user=user, click_level=click_level,
                voxel_size=voxel_size(sample) if callable(voxel_size) else voxel_size,
                click_coordinates=click_coordinates,
                reuse_cloud=sample.scene == last_scene, keep_prediction=keep and user == "oracle")
            last_scene = sample.scene
            report.results[user].append(result)
            if keep and user == "oracle":
                report.kept.append((sample, result))
        if progress is not None:
            progress(1)
    if not report.results["oracle"]:
        raise DatasetFormatError("the dataset produced no samples")
    return report


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if math.isfinite(float(v))]


def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf -> None, numpy -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _uncertainty_quality(results: list[InteractiveResult], budget: int) -> dict[str, Any]:
    """AUROC / ECE averaged over every prediction, and per clicks-per-object k."""
    per_k: dict[str, dict[str, float | None]] = {}
    for k in range(1, budget + 1):
        aurocs, eces, object_eces = [], [], []
        for result in results:
            index = np.searchsorted(result.curve.num_clicks, k * result.curve.num_objects,
                                    side="right") - 1
            if index >= 0:
                aurocs.append(result.auroc[index])
                eces.append(result.ece[index])
                if result.ece_objects is not None:
                    object_eces.append(result.ece_objects[index])
        finite_auroc, finite_ece = _finite(aurocs), _finite(eces)
        finite_objects = _finite(object_eces)
        per_k[str(k)] = {"auroc": float(np.mean(finite_auroc)) if finite_auroc else None,
                         "ece": float(np.mean(finite_ece)) if finite_ece else None,
                         "ece_objects": (float(np.mean(finite_objects)) if finite_objects
                                         else None)}
    all_auroc = _finite(v for r in results for v in r.auroc)
    all_ece = _finite(v for r in results for v in r.ece)
    all_objects = _finite(v for r in results if r.ece_objects is not None
                          for v in r.ece_objects)
    return {"auroc_mean": float(np.mean(all_auroc)) if all_auroc else None,
            "ece_mean": float(np.mean(all_ece)) if all_ece else None,
            "ece_objects_mean": float(np.mean(all_objects)) if all_objects else None,
            "num_predictions_with_auroc": len(all_auroc), "per_clicks_per_object": per_k}


def _latency(results: list[InteractiveResult]) -> dict[str, float | None]:
    predict = np.concatenate([r.predict_ms for r in results])
    encode = [r.set_cloud_ms for r in results if r.set_cloud_ms > 0]
    return {"predict_ms_mean": float(predict.mean()),
            "predict_ms_median": float(np.median(predict)),
            "predict_ms_p95": float(np.percentile(predict, 95)),
            "set_cloud_ms_mean": float(np.mean(encode)) if encode else None,
            "num_predictions": int(predict.size), "num_encodes": len(encode)}


def report_to_json(report: EvaluationReport, config: dict[str, Any]) -> dict[str, Any]:
    """Everything as a JSON-ready dict: aggregates per user, mean curves, uncertainty quality,
    latency, and per-sample curves / clicks."""
    budget = report.max_clicks_per_object
    out: dict[str, Any] = {"config": config, "metrics": {}, "mean_iou_curve": {},
                           "uncertainty_quality": {}, "latency": {}, "samples": {}}
    for user, results in report.results.items():
        out["metrics"][user] = report.summary(user)
        out["mean_iou_curve"][user] = mean_curve([r.curve for r in results], budget)
        out["uncertainty_quality"][user] = _uncertainty_quality(results, budget)
        out["latency"][user] = _latency(results)
        out["samples"][user] = [{
            "name": r.name, "scene": r.scene, "num_objects": r.curve.num_objects,
            "num_clicks": r.curve.num_clicks, "scores": r.curve.scores,
            "final_object_ious": r.object_ious[-1],
            "iou_at": {str(k): iou_at(r.curve, k) for k in IOU_CLICKS},
            "noc_at": {str(round(q * 100)): noc_at(r.curve, q, budget) for q in NOC_THRESHOLDS},
            "auroc": r.auroc, "ece": r.ece, "ece_objects": r.ece_objects,
            "predict_ms": r.predict_ms,
            "set_cloud_ms": r.set_cloud_ms, "fallback_clicks": r.fallback_clicks,
            "model": r.model, "clicks": r.clicks} for r in results]
        roles = [r.model for r in results if r.model is not None]
        if roles:  # how many samples each of the session's models ran
            out["metrics"][user]["samples_per_model"] = {
                role: roles.count(role) for role in sorted(set(roles))}
    return _clean(out)


def format_table(report: EvaluationReport) -> str:
    """Paper-style table: IoU@k in percent, NoC@q in clicks per object, one row per user."""
    keys = [f"IoU@{k}" for k in IOU_CLICKS] + [f"NoC@{round(q * 100)}" for q in NOC_THRESHOLDS]
    lines = [f"{'user':<12}{'samples':>8}" + "".join(f"{k:>9}" for k in keys)]
    for user in report.results:
        summary = report.summary(user)
        cells = [f"{100 * summary[k]:9.1f}" if k.startswith("IoU") else f"{summary[k]:9.2f}"
                 for k in keys]
        lines.append(f"{user:<12}{int(summary['num_samples']):>8}" + "".join(cells))
    return "\n".join(lines)


def _seed_metrics(report: dict[str, Any], user: str) -> dict[str, float | None]:
    """IoU@k / NoC@q (``metrics``) and mean AUROC / ECE (``uncertainty_quality``) of a JSON
    report, keyed as in ``SEED_METRICS``."""
    metrics = report["metrics"][user]
    quality = report["uncertainty_quality"][user]
    values: dict[str, float | None] = {key: metrics.get(key) for key in SEED_METRICS[:-3]}
    values["AUROC"] = quality.get("auroc_mean")
    values["ECE"] = quality.get("ece_mean")
    values["ECE objects"] = quality.get("ece_objects_mean")
    values["num_samples"] = metrics.get("num_samples")
    return values


def aggregate_seeds(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over simulator seeds of the JSON reports of one configuration.

    Args:
        reports: seed -> ``report_to_json`` output of the same configuration run with that
            ``seed`` (so with that seed's samples and latent draws).

    Returns:
        ``{"seeds", "per_seed": {seed: {user: {metric: value}}}, "spread": {user: {metric:
        {"mean", "std", "min", "max", "n"}}}}`` with the metrics of ``SEED_METRICS`` (IoU as
        fractions, NoC in clicks per object); ``std`` is the sample standard deviation
        (ddof 1; None for one seed); a metric undefined for a seed (ECE of a segmenter without
        probabilities) is left out of its statistics, and ``n`` says how many seeds count.
    """
    if not reports:
        raise DatasetFormatError("aggregate_seeds needs at least one report")
    users = [user for user in next(iter(reports.values()))["metrics"]
             if all(user in r["metrics"] for r in reports.values())]
    per_seed = {str(seed): {user: _seed_metrics(report, user) for user in users}
                for seed, report in reports.items()}
    spread: dict[str, dict[str, Any]] = {}
    for user in users:
        spread[user] = {}
        for key in SEED_METRICS:
            values = _finite(v[user][key] for v in per_seed.values() if v[user][key] is not None)
            spread[user][key] = {
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "min": min(values) if values else None, "max": max(values) if values else None,
                "n": len(values)}
    return _clean({"seeds": [int(s) for s in reports], "per_seed": per_seed, "spread": spread})


def format_seed_table(aggregate: dict[str, Any]) -> str:
    """One row per user: each metric as ``mean [min-max]`` over the seeds (IoU in percent, NoC
    in clicks per object, AUROC and ECE as fractions)."""
    seeds = " ".join(str(s) for s in aggregate["seeds"])
    lines = [f"mean [min-max] over seeds {seeds}"]
    for user, stats in aggregate["spread"].items():
        cells = []
        for key in SEED_METRICS:
            entry = stats[key]
            if entry["mean"] is None:
                cells.append(f"{key} -")
                continue
            # IoU in percent as the paper tables; NoC in clicks; AUROC / ECE as fractions (an
            # ECE of a whole sweep is often below 0.01)
            scale, digits = (100.0, 1) if key.startswith("IoU") else (
                (1.0, 2) if key.startswith("NoC") else (1.0, 3))
            cells.append(f"{key} {scale * entry['mean']:.{digits}f} "
                         f"[{scale * entry['min']:.{digits}f}-{scale * entry['max']:.{digits}f}]")
        lines.append(f"{user}: " + ", ".join(cells))
    return "\n".join(lines)

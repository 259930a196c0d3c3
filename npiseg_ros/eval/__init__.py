"""Evaluation of interactive 3-D segmentation: the field's click simulator and metrics,
dataset readers / writers, a geometric baseline, uncertainty quality and ``npiseg-eval``.

Imports core, numpy and scipy only (matplotlib lazily for plots; PyYAML for SemanticKITTI).
"""
from npiseg_ros.eval.baselines import GraphDistanceSegmenter, build_baseline
from npiseg_ros.eval.cloud import DatasetFormatError, LabelledCloud, Sample
from npiseg_ros.eval.evaluate import EvaluationReport, evaluate, format_table, report_to_json
from npiseg_ros.eval.interactive import InteractiveResult, Segmenter, run_interactive
from npiseg_ros.eval.metrics import (
    IOU_CLICKS, NOC_THRESHOLDS, ClickCurve, iou_at, mean_curve, noc_at, object_ious, summarize)
from npiseg_ros.eval.readers import (
    read_benchmark_scene, read_cloud, read_semantickitti, read_val_list)
from npiseg_ros.eval.samples import benchmark_samples, dataset_samples, semantickitti_samples
from npiseg_ros.eval.simulator import SimulatedClick, candidate_clicks, initial_clicks, next_click
from npiseg_ros.eval.uncertainty import error_auroc, expected_calibration_error
from npiseg_ros.eval.writers import (
    write_benchmark_scene, write_labelled_npz, write_labelled_ply, write_val_list)

__all__ = [
    "GraphDistanceSegmenter", "build_baseline", "EvaluationReport", "evaluate", "format_table",
    "report_to_json", "benchmark_samples", "dataset_samples", "semantickitti_samples",
    "DatasetFormatError", "LabelledCloud", "Sample", "InteractiveResult", "Segmenter",
    "run_interactive", "IOU_CLICKS", "NOC_THRESHOLDS", "ClickCurve", "iou_at", "mean_curve",
    "noc_at", "object_ious", "summarize", "read_benchmark_scene", "read_cloud",
    "read_semantickitti", "read_val_list", "SimulatedClick", "candidate_clicks",
    "initial_clicks", "next_click", "error_auroc", "expected_calibration_error",
    "write_benchmark_scene", "write_labelled_npz", "write_labelled_ply", "write_val_list",
]

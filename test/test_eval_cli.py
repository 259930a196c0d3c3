"""npiseg-eval end to end on small synthetic benchmark folders (baseline and a tiny model)."""
import json

import numpy as np
import pytest

from npiseg_ros.eval.cli import main
from npiseg_ros.eval.synthetic import boxes_on_ground
from npiseg_ros.eval.writers import write_benchmark_scene, write_val_list


@pytest.fixture
def benchmark_folder(tmp_path):
    root = tmp_path / "bench"
    for seed in range(2):
        write_benchmark_scene(root, f"boxes{seed}",
                              boxes_on_ground(2, seed=seed, spacing=0.1, ground_size=6.0))
    write_val_list(root, [("boxes0", [1, 2]), ("boxes1", [2])])
    return root


def test_baseline_run_writes_report_table_and_plots(benchmark_folder, tmp_path, capsys):
    out = tmp_path / "results.json"
    status = main(["--data", str(benchmark_folder), "--format", "benchmark", "--mode", "multi",
                   "--baseline", "graph", "--max-clicks", "3", "--out", str(out),
                   "--plots", str(tmp_path / "plots"), "--uncertainty-user", "--no-progress"])
    assert status == 0
    table = capsys.readouterr().out
    assert "NoC@85" in table and "oracle" in table and "uncertainty" in table
    report = json.loads(out.read_text())
    metrics = report["metrics"]["oracle"]
    assert metrics["num_samples"] == 2
    assert 0.0 <= metrics["IoU@1"] <= metrics["IoU@3"] + 0.5 and 1 <= metrics["NoC@90"] <= 3
    samples = report["samples"]["oracle"]
    assert [s["num_objects"] for s in samples] == [2, 1]
    assert [s["model"] for s in samples] == [None, None] and "samples_per_model" not in metrics
    assert samples[0]["num_clicks"][0] == 2 and samples[0]["num_clicks"][-1] <= 6
    assert len(report["mean_iou_curve"]["oracle"]) == 3
    assert report["latency"]["oracle"]["num_predictions"] == sum(
        len(s["scores"]) for s in samples)
    assert report["uncertainty_quality"]["oracle"]["auroc_mean"] is not None
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert "miou_curve.png" in pngs and len(pngs) == 3


def test_single_mode_and_limit(benchmark_folder, tmp_path):
    out = tmp_path / "single.json"
    assert main(["--data", str(benchmark_folder), "--format", "benchmark", "--mode", "single",
                 "--baseline", "graph", "--max-clicks", "2", "--limit", "2", "--out", str(out),
                 "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert [s["num_objects"] for s in report["samples"]["oracle"]] == [1, 1]


def test_bad_dataset_exits_with_message(tmp_path, capsys):
    status = main(["--data", str(tmp_path), "--format", "benchmark", "--baseline", "graph",
                   "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert status == 2
    assert "val_list.json" in capsys.readouterr().err


def test_checkpoint_run_with_tiny_model(benchmark_folder, tmp_path):
    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("npiseg_ros.core.checkpoint")
    build = pytest.importorskip("npiseg_ros.core.build")
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    checkpoint.save_checkpoint(path, build.build_model(build.tiny_config()))
    out = tmp_path / "model.json"
    assert main(["--data", str(benchmark_folder), "--format", "benchmark", "--checkpoint",
                 str(path), "--max-clicks", "2", "--limit", "1", "--num-samples", "2",
                 "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    sample = report["samples"]["oracle"][0]
    assert sample["num_clicks"] == [2, 3, 4]
    eces = [e for e in sample["ece"] if e is not None]
    assert eces and all(0.0 <= e <= 1.0 for e in eces)  # the adapter supplies confidences
    assert np.isfinite(report["latency"]["oracle"]["predict_ms_median"])


def test_whole_scan_samples_have_1_3_and_5_neighbouring_objects(tmp_path):
    from npiseg_ros.eval.samples import dataset_samples

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        centres = rng.uniform(0, 40, (7, 2))
        xyz = np.concatenate([np.column_stack([c + rng.normal(0, 0.3, (80, 2)), np.zeros(80)])
                              for c in centres] + [rng.uniform(0, 40, (500, 3))])
        labels = np.concatenate([np.full(80, i + 1) for i in range(7)] + [np.zeros(500)])
        np.savez(tmp_path / f"{name}.npz", xyz=xyz.astype(np.float32),
                 instance=labels.astype(np.int32))
    samples = list(dataset_samples(tmp_path, "scans", "multi", seed=0))
    assert [s.name for s in samples] == ["a_obj_1", "a_obj_3", "a_obj_5",
                                         "b_obj_1", "b_obj_3", "b_obj_5"]
    for sample in samples:
        assert sample.cloud.xyz.shape[0] == 7 * 80 + 500  # the whole scan, no crop
        assert len(set(sample.object_ids)) == int(sample.name[-1])
        cloud = sample.cloud
        centroid = {o: cloud.xyz[cloud.labels == o].mean(0) for o in range(1, 8)}
        anchor, *others = sample.object_ids
        chosen = [np.linalg.norm(centroid[o] - centroid[anchor]) for o in others]
        rest = [np.linalg.norm(centroid[o] - centroid[anchor]) for o in range(1, 8)
                if o not in sample.object_ids]
        assert not chosen or max(chosen) <= min(rest)  # the anchor's nearest neighbours
    again = [s.object_ids for s in dataset_samples(tmp_path, "scans", "multi", seed=0)]
    assert again == [s.object_ids for s in samples]


def test_rgb_checkpoint_is_recorded_and_refused_with_a_baseline(benchmark_folder, tmp_path,
                                                                  capsys):
    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("npiseg_ros.core.checkpoint")
    build = pytest.importorskip("npiseg_ros.core.build")
    torch.manual_seed(0)
    path = checkpoint.save_checkpoint(tmp_path / "tiny.safetensors",
                                      build.build_model(build.tiny_config()))
    out = tmp_path / "model.json"
    assert main(["--data", str(benchmark_folder), "--format", "benchmark", "--checkpoint",
                 str(path), "--rgb-checkpoint", str(path), "--max-clicks", "1", "--limit", "1",
                 "--num-samples", "1", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["config"]["rgb_checkpoint"] == str(path)
    roles = [sample["model"] for sample in report["samples"]["oracle"]]
    assert roles and set(roles) <= {"default", "rgb"}  # which model ran each sample
    assert report["metrics"]["oracle"]["samples_per_model"] == {
        role: roles.count(role) for role in set(roles)}
    with pytest.raises(SystemExit):
        main(["--data", str(benchmark_folder), "--format", "benchmark", "--baseline", "graph",
              "--rgb-checkpoint", str(path), "--out", str(out)])
    assert "--rgb-checkpoint goes with a model" in capsys.readouterr().err


def test_the_simulator_uses_the_voxel_size_of_the_model_that_runs_each_sample(tmp_path):
    """The shipped pair differs in voxel size: with an ``rgb_checkpoint`` the simulated user
    clicks on the representatives of the voxels the picked model sees (a coloured scan: the
    colour model's; a colourless one: the default model's)."""
    import dataclasses

    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("npiseg_ros.core.checkpoint")
    build = pytest.importorskip("npiseg_ros.core.build")
    from npiseg_ros.eval.cli import build_segmenter
    from npiseg_ros.eval.evaluate import evaluate
    from npiseg_ros.eval.samples import dataset_samples

    torch.manual_seed(0)
    coarse = checkpoint.save_checkpoint(tmp_path / "coarse.safetensors", build.build_model(
        dataclasses.replace(build.tiny_config(), voxel_size=0.2)))
    fine = checkpoint.save_checkpoint(tmp_path / "fine.safetensors",
                                      build.build_model(build.tiny_config()))
    segmenter, voxel_size = build_segmenter(checkpoint=str(coarse), rgb_checkpoint=str(fine),
                                            num_samples=1)
    root = tmp_path / "bench"
    write_benchmark_scene(root, "boxes", boxes_on_ground(2, seed=0, spacing=0.05,
                                                         ground_size=4.0))
    write_val_list(root, [("boxes", [1])])
    sample = next(iter(dataset_samples(root, "benchmark", "multi", seed=0)))
    assert sample.cloud.colors is not None
    assert voxel_size(sample) == 0.05
    grey = dataclasses.replace(sample, cloud=dataclasses.replace(sample.cloud, colors=None))
    assert voxel_size(grey) == 0.2
    seen = []
    evaluate(segmenter, [sample, grey], max_clicks_per_object=1,
             voxel_size=lambda s: seen.append(s.cloud.colors is None) or voxel_size(s))
    assert seen == [False, True]
    # a single model (or a baseline) keeps one number
    assert build_segmenter(checkpoint=str(coarse), num_samples=1)[1] == 0.2

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


# ---------------------------------------------------------------- issue 20: the honest protocol
def _streets(folder, box_only=False):
    """Two synthetic streets with semantics (test_targets.street_scan), and optionally one
    box-only street; returns {file stem: arrays}."""
    from test_targets import street_scan

    folder.mkdir(exist_ok=True)
    streets = {name: street_scan(folder / f"{name}.npz", seed=seed)
               for seed, name in enumerate(("a", "b"))}
    if box_only:
        streets["boxes"] = street_scan(folder / "boxes.npz", semantics=False, seed=2)
    return streets


def _eval_scans(folder, out, *args, status=0):
    """``npiseg-eval --format scans`` on ``folder`` -> ``out`` exits with ``status``; returns
    the report (None for a failed run)."""
    assert main(["--data", str(folder), "--format", "scans", *args, "--out", str(out),
                 "--no-progress"]) == status
    return json.loads(out.read_text()) if status == 0 else None


def _refused(capsys, message, *argv):
    """argparse refuses the command line with ``message`` (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def _tiny_checkpoint(tmp_path, gate=None, **config):
    torch = pytest.importorskip("torch")
    checkpoint = pytest.importorskip("npiseg_ros.core.checkpoint")
    build = pytest.importorskip("npiseg_ros.core.build")
    torch.manual_seed(0)
    model = build.build_model(build.prior_config(**config) if gate is not None
                              else build.tiny_config(**config))
    if gate is not None:
        with torch.no_grad():
            model.prior.correction_gate.fill_(gate)
    return str(checkpoint.save_checkpoint(tmp_path / f"tiny_{gate}.safetensors", model))


def test_targets_and_object_counts_shape_the_scan_samples(tmp_path):
    from npiseg_ros.eval.samples import dataset_samples
    from test_targets import CAR

    streets = _streets(tmp_path / "scans")
    samples = list(dataset_samples(tmp_path / "scans", "scans", targets="things",
                                   object_counts=(1, 2, 3)))
    assert [s.name for s in samples] == ["a_obj_1", "a_obj_2", "a_obj_3",
                                         "b_obj_1", "b_obj_2", "b_obj_3"]
    for sample in samples:  # clean things: only car points, never the road inside the boxes
        semantic = streets[sample.scene]["semantic"]
        assert np.all(semantic[sample.target_labels() > 0] == CAR)
    raw = next(iter(dataset_samples(tmp_path / "scans", "scans", object_counts=(3,))))
    assert np.any(streets["a"]["semantic"][raw.target_labels() > 0] != CAR)
    # counts above the candidates take them all, once
    capped = list(dataset_samples(tmp_path / "scans", "scans", targets="things",
                                  object_counts=(2, 5, 9)))
    assert [s.name for s in capped] == ["a_obj_2", "a_obj_3", "b_obj_2", "b_obj_3"]
    stuff = list(dataset_samples(tmp_path / "scans", "scans", targets="stuff",
                                 object_counts=(3,)))
    assert all({s.cloud.names[o] for o in s.object_ids} == {"road", "vegetation"}
               for s in stuff)
    with pytest.raises(ValueError, match=">= 1"):
        next(dataset_samples(tmp_path / "scans", "scans", object_counts=(0, 2)))
    with pytest.raises(ValueError, match="targets must be one of"):
        next(dataset_samples(tmp_path / "scans", "scans", targets="objects"))
    with pytest.raises(ValueError, match="--format scans only"):
        next(dataset_samples(tmp_path / "scans", "benchmark", targets="things"))


def test_cli_records_targets_seed_and_object_counts(tmp_path, capsys):
    _streets(tmp_path / "scans", box_only=True)
    report = _eval_scans(tmp_path / "scans", tmp_path / "stuff.json", "--targets",
                                 "stuff", "--objects-per-sample", "1", "2", "--baseline",
                                 "graph", "--max-clicks", "1", "--seed", "3")
    config = report["config"]
    assert (config["targets"], config["objects_per_sample"], config["seed"]) == (
        "stuff", [1, 2], 3)
    assert config["skipped_files"] == []  # box-only files just have no stuff
    assert sorted(s["name"] for s in report["samples"]["oracle"]) == [
        "a_obj_1", "a_obj_2", "b_obj_1", "b_obj_2"]
    report = _eval_scans(tmp_path / "scans", tmp_path / "classes.json", "--targets",
                                 "classes", "--baseline", "graph", "--max-clicks", "1")
    config = report["config"]
    assert config["skipped_files"] == ["boxes.npz"] and config["objects_per_sample"] == [1, 3, 5]
    assert "no classes targets in: boxes.npz" in capsys.readouterr().err
    _refused(capsys, "apply to --format scans", "--data", str(tmp_path), "--format",
             "benchmark", "--baseline", "graph", "--targets", "things")


def test_baseline_prior_runs_the_model_prior_and_refuses_a_model_without_one(tmp_path, capsys):
    _streets(tmp_path / "scans")
    path = _tiny_checkpoint(tmp_path, gate=0.8)
    report = _eval_scans(tmp_path / "scans", tmp_path / "prior.json", "--targets",
                                 "things", "--baseline", "prior", "--checkpoint", path,
                                 "--rgb-checkpoint", "none", "--max-clicks", "1", "--limit",
                                 "1", "--num-samples", "2")
    config = report["config"]
    assert (config["baseline"], config["checkpoint"]) == ("prior", path)
    from npiseg_ros.eval.cli import build_segmenter

    segmenter, voxel_size = build_segmenter(checkpoint=path, baseline="prior", num_samples=1)
    assert segmenter.session.model.prior.correction_gate.item() == 0.0
    assert build_segmenter(checkpoint=path, num_samples=1)[0].session.model.prior \
        .correction_gate.item() == pytest.approx(0.8)
    no_prior = _tiny_checkpoint(tmp_path)
    _eval_scans(tmp_path / "scans", tmp_path / "none.json", "--baseline", "prior",
                "--checkpoint", no_prior, "--rgb-checkpoint", "none", status=2)
    assert "geodesic prior" in capsys.readouterr().err
    _refused(capsys, "not with --baseline graph", "--data", str(tmp_path), "--format", "scans",
             "--baseline", "graph", "--checkpoint", path)


def test_latents_mean_reaches_the_session_and_draws_nothing(tmp_path, capsys):
    from npiseg_ros.eval.cli import build_segmenter
    from npiseg_ros.eval.samples import dataset_samples

    _streets(tmp_path / "scans")
    path = _tiny_checkpoint(tmp_path, gate=1.0)
    sample = next(iter(dataset_samples(tmp_path / "scans", "scans", targets="things",
                                       object_counts=(2,))))

    def confidence(latents, seed):
        segmenter, voxel_size = build_segmenter(checkpoint=path, latents=latents, seed=seed,
                                                num_samples=4)
        assert segmenter.session.latents == latents
        segmenter.set_cloud(sample.cloud.xyz)
        for k, object_id in enumerate(sample.object_ids, start=1):
            segmenter.add_click(object_id=k, point_index=int(
                np.flatnonzero(sample.cloud.labels == object_id)[0]))
        return segmenter.predict().confidence

    np.testing.assert_array_equal(confidence("mean", 0), confidence("mean", 1))
    assert not np.allclose(confidence("sample", 0), confidence("sample", 1), atol=1e-5)
    report = _eval_scans(tmp_path / "scans", tmp_path / "mean.json", "--checkpoint",
                                 path, "--rgb-checkpoint", "none", "--latents", "mean",
                                 "--max-clicks", "1", "--limit", "1")
    assert report["config"]["latents"] == "mean"
    _refused(capsys, "--latents goes with a model", "--data", str(tmp_path), "--format",
             "scans", "--baseline", "graph", "--latents", "mean")


def test_seeds_write_one_report_per_seed_and_their_spread(tmp_path, capsys):
    _streets(tmp_path / "scans")
    aggregate = _eval_scans(tmp_path / "scans", tmp_path / "things.json", "--targets",
                                    "things", "--objects-per-sample", "1", "2", "--baseline",
                                    "graph", "--max-clicks", "2", "--seeds", "0", "1", "2")
    assert aggregate["config"]["seeds"] == [0, 1, 2] and "seed" not in aggregate["config"]
    assert aggregate["config"]["targets"] == "things"
    values = []
    for seed in ("0", "1", "2"):
        path = aggregate["reports"][seed]
        assert path == str(tmp_path / f"things_seed{seed}.json")
        report = json.loads(open(path).read())
        assert report["config"]["seed"] == int(seed)
        values.append(report["metrics"]["oracle"]["IoU@1"])
        assert aggregate["per_seed"][seed]["oracle"]["IoU@1"] == values[-1]
    spread = aggregate["spread"]["oracle"]["IoU@1"]
    assert spread["mean"] == pytest.approx(np.mean(values))
    assert (spread["min"], spread["max"], spread["n"]) == (min(values), max(values), 3)
    assert spread["std"] == pytest.approx(np.std(values, ddof=1))
    assert aggregate["spread"]["oracle"]["ECE"]["n"] == 0  # the graph has no probabilities
    assert "mean [min-max] over seeds 0 1 2" in capsys.readouterr().out
    _refused(capsys, "give --seed or --seeds", "--data", str(tmp_path), "--format", "scans",
             "--baseline", "graph", "--seed", "1", "--seeds", "0", "1")


class _BallSegmenter:
    """Labels every point within ``radius`` metres of the last click as its object: a first
    click in a car then takes the road under it too."""

    def __init__(self, radius):
        self.radius = radius

    def set_cloud(self, xyz, colors=None, intensity=None):
        self.xyz, self.click = np.asarray(xyz, np.float64), None

    def reset(self):
        self.click = None

    def add_click(self, position=None, *, object_id, point_index=None):
        self.click = (int(point_index), int(object_id))

    def predict(self):
        from types import SimpleNamespace

        index, object_id = self.click
        near = np.linalg.norm(self.xyz - self.xyz[index], axis=1) <= self.radius
        return SimpleNamespace(labels=np.where(near, object_id, 0),
                               uncertainty=np.zeros(len(self.xyz)))


def test_first_click_leak_counts_the_labelled_points_outside_each_car(tmp_path):
    """scripts/first_click_leak.py on a synthetic street: its IoU, non-car share and leak per
    class match the prediction, for a segmenter that floods onto the road."""
    import importlib.util
    from pathlib import Path

    from test_targets import CAR, ROAD, street_scan

    spec = importlib.util.spec_from_file_location(
        "first_click_leak", Path(__file__).resolve().parents[1] / "scripts" /
        "first_click_leak.py")
    leak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leak)
    truth = street_scan(tmp_path / "semkitti_street.npz")
    rows = leak.car_leaks(tmp_path / "semkitti_street.npz", _BallSegmenter(2.0), 0.05)
    assert [row["class"] for row in rows] == ["car"] * 3
    for row in rows:
        own = (truth["instance"] == row["instance"]) & (truth["semantic"] == CAR)
        assert row["points"] == own.sum() == 200 and own[row["click_point"]]
        click = truth["xyz"][row["click_point"]].astype(np.float64)
        labelled = np.linalg.norm(truth["xyz"] - click, axis=1) <= 2.0
        road = int((labelled & (truth["semantic"] == ROAD)).sum())
        assert road > 0 and row["leak"] == {"road": road}
        assert row["predicted_points"] == labelled.sum()
        assert row["not_car_share"] == pytest.approx(road / labelled.sum())
        assert row["iou"] == pytest.approx((labelled & own).sum() / (labelled | own).sum())
    summary = leak.summarize(rows)
    assert summary["cars"] == 3
    assert summary["leak_points_by_class"] == {"road": sum(r["leak"]["road"] for r in rows)}
    street_scan(tmp_path / "boxes.npz", semantics=False)
    with pytest.raises(ValueError, match="no semantic labels"):
        leak.car_leaks(tmp_path / "boxes.npz", _BallSegmenter(2.0), 0.05)

"""Training package: one step learns, the KL weight ramps, resume is exact, click sampling."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from npiseg_ros.eval.cloud import LabelledCloud
from npiseg_ros.eval.simulator import next_click
from npiseg_ros.eval.writers import write_benchmark_scene
from npiseg_train.clicks import choose_targets, largest_error_click, random_clicks
from npiseg_train.config import ConfigError, config_from_dict, load_config
from npiseg_train.augment import build_augmentation
from npiseg_train.data import CachedScan, crop_cached, voxelize_and_crop
from npiseg_train.losses import KLRamp
from npiseg_train.trainer import Trainer
from scenes import floor_with_boxes

ROOT = Path(__file__).resolve().parents[1]


def write_box_scenes(root: Path, count: int = 3) -> Path:
    """A tiny benchmark folder: floors with coloured boxes (labels shifted so the floor is
    an object too, as in the synthetic scenes)."""
    for seed in range(count):
        xyz, rgb, labels = floor_with_boxes(seed=seed, num_boxes=3, spacing=0.05, extent=2.5)
        write_benchmark_scene(root, f"boxes_{seed}",
                              LabelledCloud(xyz=xyz, labels=labels + 1, colors=rgb))
    return root


def tiny_config(data_root: Path, out: Path, **run: object):
    values = {
        "model": {"preset": "tiny", "overrides": {"input_mode": "rgb"}},
        "data": {"source": "benchmark", "roots": [str(data_root)], "max_voxels": 1500,
                 "min_object_voxels": 5},
        "clicks": {"max_objects": 3, "max_corrective_rounds": 2, "num_samples": 2},
        "optim": {"lr": 1e-3},
        "run": {"max_steps": 4, "batch_size": 2, "out": str(out), "checkpoint_every": 0,
                "val_every": 0, "threads": 1, "sparse_backend": "torch", "device": "cpu",
                **run},
    }
    return config_from_dict(values)


@pytest.fixture(scope="module")
def box_root(tmp_path_factory) -> Path:
    return write_box_scenes(tmp_path_factory.mktemp("boxes"))


def test_one_step_changes_weights_and_logs_finite_losses(box_root, tmp_path):
    trainer = Trainer(tiny_config(box_root, tmp_path), tmp_path, show_progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    row = trainer.train_step()
    assert trainer.step == 1
    for key in ("loss", "seg", "kl_scene", "kl_objects", "grad_norm"):
        assert math.isfinite(row[key]), key
    assert row["kl_scene"] + row["kl_objects"] > 0.0
    assert row["kl_weight"] == pytest.approx(0.0005)
    changed = [n for n, p in trainer.model.named_parameters()
               if not torch.equal(p.detach(), before[n])]
    for part in ("backbone", "decoder", "scene_latent", "object_latent", "modulator"):
        assert any(n.startswith(part) for n in changed), f"no {part} parameter changed"


def test_kl_weight_follows_the_ramp_and_logs_are_written(box_root, tmp_path):
    config = tiny_config(box_root, tmp_path, max_steps=3, checkpoint_every=3)
    trainer = Trainer(config, tmp_path, show_progress=False)
    rows = trainer.train()
    ramp = KLRamp(config.optim.kl_start, config.optim.kl_end, config.run.max_steps)
    assert [r["kl_weight"] for r in rows] == pytest.approx([ramp(s) for s in range(3)])
    assert rows[0]["kl_weight"] < rows[1]["kl_weight"] < rows[2]["kl_weight"]
    logged = trainer.train_log.rows()
    assert [int(r["step"]) for r in logged] == [1, 2, 3]
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "checkpoint" / "state.pt").is_file()
    from npiseg_ros.core.checkpoint import load_model

    model = load_model(tmp_path / "model.safetensors")
    assert model.config == trainer.model.config


@pytest.fixture
def one_thread():
    """Bit-exact comparisons need one intra-op thread: with several, PyTorch's CPU reductions
    may add in another order from run to run (seen with 2 threads, last bits of a weight)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_resume_reproduces_the_uninterrupted_run(box_root, tmp_path, one_thread):
    config = tiny_config(box_root, tmp_path / "a", max_steps=4, checkpoint_every=2)
    uninterrupted = Trainer(config, tmp_path / "a", show_progress=False)
    uninterrupted.train(max_steps=2)
    shutil.copytree(tmp_path / "a" / "checkpoint", tmp_path / "at_step_2")
    expected = uninterrupted.train(max_steps=4)

    torch.manual_seed(123)  # a different global state: resume must restore it
    np.random.seed(5)
    resumed = Trainer(config.replace_run(out=str(tmp_path / "b")), tmp_path / "b",
                      show_progress=False)
    resumed.resume(tmp_path / "at_step_2")
    assert resumed.step == 2
    again = resumed.train(max_steps=4)
    assert [r["loss"] for r in again] == [r["loss"] for r in expected]
    for (name, a), b in zip(uninterrupted.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_fast_corrective_click_equals_the_evaluation_simulator():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(5, 120))
        # integer grids make distance ties common: the tie rules must match too
        xyz = (rng.integers(0, 5, (n, 3)).astype(float) if trial % 2 else rng.random((n, 3)))
        gt = rng.integers(0, 4, n)
        prediction = gt.copy()
        flip = rng.random(n) < rng.random()
        prediction[flip] = rng.integers(0, 5, int(flip.sum()))
        expected, actual = next_click(xyz, gt, prediction), largest_error_click(xyz, gt,
                                                                                 prediction)
        assert (expected is None) == (actual is None)
        if expected is not None:
            assert (actual.point_index, actual.label, actual.predicted_label) == (
                expected.point_index, expected.label, expected.predicted_label)


def test_click_sampling_covers_every_target_and_respects_ranges():
    xyz, rgb, labels = floor_with_boxes(seed=1, num_boxes=3, spacing=0.05)
    rng = np.random.default_rng(0)
    for _ in range(10):
        targets = choose_targets(labels + 1, xyz, rng, max_objects=3, min_voxels=5)
        assert targets is not None and 1 <= targets.max() <= 3
        voxels, click_labels = random_clicks(xyz, targets, rng, max_positive=3, max_negative=5)
        assert np.array_equal(targets[voxels], click_labels)
        for label in range(1, targets.max() + 1):
            assert 1 <= np.sum(click_labels == label) <= 3
        assert np.sum(click_labels == 0) <= 5


def test_thing_fraction_sets_how_often_the_anchor_is_a_thing():
    # four boxes: ids 1 and 2 are things, the floor (id 5) and box 3 / 4 are stuff pieces
    xyz, _, labels = floor_with_boxes(seed=1, num_boxes=4, spacing=0.05)
    labels = np.where(labels == 0, 5, labels)
    things = (1, 2)
    for fraction, low, high in ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.5, 0.4, 0.6)):
        rng = np.random.default_rng(3)
        picked = [choose_targets(labels, xyz, rng, max_objects=1, min_voxels=5, things=things,
                                 thing_fraction=fraction) for _ in range(300)]
        is_thing = [np.isin(labels[t == 1], things).all() for t in picked]
        assert low <= np.mean(is_thing) <= high, fraction
    # a crop anchored on a thing keeps all of that thing and is centred on it
    scan = CachedScan("s", np.floor(xyz / 0.05).astype(np.int64), xyz, labels,
                      np.zeros((len(xyz), 1), np.float32), None, things=(2,))
    for seed in range(5):
        scene = crop_cached(scan, max_voxels=len(xyz) // 4, min_object_voxels=5, voxel_size=0.05,
                            rng=np.random.default_rng(seed), thing_fraction=1.0)
        assert np.sum(scene.labels == 2) == np.sum(labels == 2) and scene.things == (2,)
    with pytest.raises(ConfigError, match="thing_fraction"):
        config_from_dict({"data": {"thing_fraction": 1.5}})


def test_augmentation_and_crop_keep_labels_aligned_and_cap_voxels():
    xyz, rgb, labels = floor_with_boxes(seed=2, spacing=0.02)
    config = config_from_dict({"data": {"dropout": [0.1, 0.2], "drop_colors": 0.0}}).data
    points = build_augmentation(config)({"xyz": xyz, "colors": rgb, "intensity": None,
                                         "labels": labels}, np.random.default_rng(0))
    assert len(points["xyz"]) == len(points["labels"]) == len(points["colors"]) < len(xyz)
    scene = voxelize_and_crop(points, voxel_size=0.05, input_mode="rgb", max_voxels=800,
                              min_object_voxels=5, rng=np.random.default_rng(0))
    assert scene.num_voxels == 800
    assert scene.features.shape == (800, 3) and scene.labels.shape == (800,)
    assert len(np.unique(scene.coords, axis=0)) == 800


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("train_*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_training_configs_load(path):
    config = load_config(path)
    assert config.run.max_steps > 0


def test_class_balance_weights_equalise_classes():
    from npiseg_train.losses import class_balance_weights

    targets = torch.tensor([0] * 90 + [1] * 9 + [2])
    assert torch.equal(class_balance_weights(targets, 3, 0.0), torch.ones(100))
    full = class_balance_weights(targets, 3, 1.0)
    totals = torch.stack([full[targets == k].sum() for k in range(3)])
    assert torch.allclose(totals, totals[0].expand(3)) and full.mean() == pytest.approx(1.0)
    half = class_balance_weights(targets, 3, 0.5)
    assert half[99] / half[0] == pytest.approx((90 / 1) ** 0.5)


def test_cosine_schedule_follows_the_time_budget_and_survives_resume(box_root, tmp_path):
    """Progress = training seconds / budget: the LR decays from lr to lr * min_lr_factor and
    the KL weight ramps within the budget; the run stops when the budget is spent; a resume
    continues from the saved progress, not from zero."""
    values = tiny_config(box_root, tmp_path).to_dict()
    values["model"] = {"preset": "prior"}
    values["clicks"]["corrective_policy"] = "prior"
    values["optim"].update(schedule="cosine", min_lr_factor=0.1, lr=1e-3)
    values["run"].update(max_steps=1000, time_budget_min=1.0)
    config = config_from_dict(values)
    trainer = Trainer(config, tmp_path, show_progress=False)
    assert trainer.optimiser.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert trainer._kl_weight() == pytest.approx(config.optim.kl_start)
    trainer.train_step()
    trainer.elapsed_s = 30.0  # half the budget spent (training seconds, not wall clock)
    trainer.scheduler.step()
    assert trainer.progress() == pytest.approx(0.5)
    assert trainer.optimiser.param_groups[0]["lr"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert trainer.optimiser.param_groups[1]["lr"] == pytest.approx(
        10 * trainer.optimiser.param_groups[0]["lr"])  # the prior's scalars
    trainer.save()
    resumed = Trainer(config, tmp_path / "again", show_progress=False)
    resumed.resume(tmp_path)
    assert resumed.elapsed_s == pytest.approx(trainer.elapsed_s)
    assert resumed.progress() == pytest.approx(trainer.progress())
    resumed.elapsed_s = 61.0
    resumed.train(max_steps=1000)  # the budget is spent: stops after one step
    assert resumed.step == trainer.step + 1
    assert resumed._kl_weight() == pytest.approx(config.optim.kl_end)


def test_scan_source_crops_cached_scans_with_exact_symmetries_and_their_graph(tmp_path):
    from npiseg_train.data import SceneStream

    for seed in range(2):
        xyz, rgb, labels = floor_with_boxes(seed=seed, num_boxes=3, spacing=0.04)
        np.savez(tmp_path / f"scan_{seed}.npz", xyz=xyz, instance=labels,
                 colors=(rgb * 255).astype(np.uint8))
    values = tiny_config(tmp_path, tmp_path / "out").to_dict()
    values["model"] = {"preset": "prior"}
    values["data"].update(source="scans", roots=[str(tmp_path)], max_voxels=1200)
    config = config_from_dict(values)
    model_config = config.model.model_config()
    stream = SceneStream(config.data, voxel_size=model_config.voxel_size,
                         input_mode=model_config.input_mode,
                         graph_config=model_config.graph_config())
    for step in range(6):
        scene, _ = stream.scene(step, 0, 0)
        assert scene.num_voxels <= 1200 and scene.graph.num_voxels == scene.num_voxels
        assert len(np.unique(scene.coords, axis=0)) == scene.num_voxels  # still unique
        # the symmetry maps voxel cells and positions alike
        np.testing.assert_array_equal(
            np.floor(scene.xyz / model_config.voxel_size).astype(np.int64)[:, 2],
            scene.coords[:, 2])
        # the cached (sub)graph's rows are the crop's voxels, in order, under the symmetry:
        # every edge costs at least its length and joins near neighbours
        edges = scene.graph.matrix.tocoo()
        length = np.linalg.norm(scene.xyz[edges.row] - scene.xyz[edges.col], axis=1)
        assert edges.nnz > 5 * scene.num_voxels
        assert np.all(edges.data >= length - 1e-5) and np.median(length) < 0.1
    assert len(stream._scan_cache) <= 2  # each file voxelised and graphed once


def test_excluded_file_patterns_leave_the_training_files(tmp_path):
    from npiseg_train.data import scan_files_per_root

    root = tmp_path / "lidar"
    root.mkdir()
    for name in ("pandaset_002_00.npz", "pandaset_002_04.npz", "kitti_000000.npz", "notes.txt"):
        (root / name).write_bytes(b"")
    kept = scan_files_per_root([str(root)], ("pandaset_*",))
    assert [p.name for p in kept[0]] == ["kitti_000000.npz"]
    with pytest.raises(FileNotFoundError, match="excluding"):
        scan_files_per_root([str(root)], ("*.npz",))


def test_root_weights_draw_roots_by_weight_then_files_uniformly(tmp_path):
    from npiseg_train.data import file_probabilities, scan_files_per_root

    roots = []
    for name, count in (("many", 6), ("few", 2)):
        root = tmp_path / name
        root.mkdir()
        for index in range(count):
            (root / f"s{index}.npz").write_bytes(b"")
        roots.append(str(root))
    per_root = scan_files_per_root(roots)
    np.testing.assert_allclose(file_probabilities(per_root, ()), np.full(8, 1 / 8))
    weighted = file_probabilities(per_root, (1.0, 3.0))
    np.testing.assert_allclose(weighted[:6], 0.25 / 6)
    np.testing.assert_allclose(weighted[6:], 0.75 / 2)
    base = tiny_config(tmp_path, tmp_path / "out").to_dict()
    for data, message in (({"root_weights": [1.0, 2.0]}, "one weight per root"),
                          ({"source": "scans", "roots": roots, "root_weights": [0.0, 0.0]},
                           "positive sum"),
                          ({"source": "scans", "roots": roots, "root_weights": [1.0]},
                           "one weight per root")):
        values = {**base, "data": {**base["data"], **data}}
        with pytest.raises(Exception, match=message):
            config_from_dict(values)


def test_init_from_starts_a_run_from_a_checkpoint_and_refuses_weights_that_do_not_fit(
        box_root, tmp_path):
    from npiseg_ros.core.build import build_model
    from npiseg_ros.core.checkpoint import save_checkpoint
    from npiseg_ros.core.errors import CheckpointError

    config = tiny_config(box_root, tmp_path / "a")
    torch.manual_seed(123)  # weights a fresh run (seed 0) would not build
    source = build_model(config.model.model_config())
    path = save_checkpoint(tmp_path / "start.safetensors", source)
    trainer = Trainer(config.replace_run(init_from=str(path)), tmp_path / "a",
                      show_progress=False)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value, rtol=0, atol=0)
    assert trainer.step == 0
    other = build_model(config_from_dict({**config.to_dict(),
                                          "model": {"preset": "tiny", "overrides": {
                                              "input_mode": "none"}}}).model.model_config())
    wrong = save_checkpoint(tmp_path / "other.safetensors", other)
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(config.replace_run(init_from=str(wrong)), tmp_path / "b", show_progress=False)
    # a field that changes no parameter may differ: it is reported
    coarse = config_from_dict({**config.to_dict(), "model": {
        "preset": "tiny", "overrides": {"input_mode": "rgb", "decode_stride": 2}}})
    trainer = Trainer(coarse.replace_run(init_from=str(path)), tmp_path / "c",
                      show_progress=False)
    assert trainer.init_differences == {"decode_stride": (1, 2)}
    assert trainer.train_step()["loss"] > 0


def test_ema_weights_follow_the_warmed_up_average_are_exported_and_resume(box_root, tmp_path,
                                                                           one_thread):
    from npiseg_ros.core.checkpoint import read_checkpoint

    config = tiny_config(box_root, tmp_path / "a", max_steps=4, checkpoint_every=2)
    config = config_from_dict({**config.to_dict(),
                               "optim": {**config.to_dict()["optim"], "ema_decay": 0.5}})
    trainer = Trainer(config, tmp_path / "a", show_progress=False)
    expected = {n: t.clone() for n, t in trainer.model.state_dict().items()}
    for n in range(2):
        trainer.train_step()
        decay = min(0.5, (1.0 + n) / (10.0 + n))
        for name, value in trainer.model.state_dict().items():
            if value.is_floating_point():
                expected[name] = decay * expected[name] + (1.0 - decay) * value
            else:
                expected[name] = value.clone()
    averaged = trainer.ema_model.state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value)
    assert not torch.equal(averaged["logit_scale"], trainer.model.state_dict()["logit_scale"])
    trainer.save()
    _, exported, metadata = read_checkpoint(tmp_path / "a" / "model.safetensors")
    assert metadata["weights"] == "ema"
    torch.testing.assert_close(exported["logit_scale"], averaged["logit_scale"])
    shutil.copytree(tmp_path / "a" / "checkpoint", tmp_path / "at_step_2")
    trainer.train(max_steps=4)

    resumed = Trainer(config.replace_run(out=str(tmp_path / "b")), tmp_path / "b",
                      show_progress=False)
    resumed.resume(tmp_path / "at_step_2")
    resumed.train(max_steps=4)
    for (name, a), b in zip(trainer.ema_model.state_dict().items(),
                            resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b), name

"""Training configs: one recipe file plus small per-run files (``base:``), resolved by merging."""
from __future__ import annotations

from pathlib import Path

import pytest

from npiseg_ros.core.errors import ConfigError
from npiseg_train.config import load_config, merge_config

CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_merge_replaces_leaves_and_merges_mappings():
    base = {"optim": {"lr": 1.0, "kl_end": 2.0}, "data": {"roots": ["a", "b"]}}
    merged = merge_config(base, {"optim": {"lr": 3.0}, "data": {"roots": ["c"]}})
    assert merged == {"optim": {"lr": 3.0, "kl_end": 2.0}, "data": {"roots": ["c"]}}
    assert base["optim"]["lr"] == 1.0  # the base is not modified


def test_a_run_file_holds_only_what_differs(tmp_path):
    (tmp_path / "recipe.yaml").write_text(
        "model: {preset: tiny}\noptim: {lr: 0.001, weight_decay: 0.01}\nrun: {max_steps: 7}\n")
    (tmp_path / "run.yaml").write_text("base: recipe.yaml\noptim: {lr: 0.5}\n")
    config = load_config(tmp_path / "run.yaml")
    assert config.optim.lr == 0.5
    assert config.optim.weight_decay == 0.01
    assert config.run.max_steps == 7
    assert config.model.preset == "tiny"


def test_base_chains_and_cycles(tmp_path):
    (tmp_path / "a.yaml").write_text("run: {max_steps: 1}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nrun: {batch_size: 3}\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nrun: {seed: 5}\n")
    config = load_config(tmp_path / "c.yaml")
    assert (config.run.max_steps, config.run.batch_size, config.run.seed) == (1, 3, 5)
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "x.yaml")
    (tmp_path / "z.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "z.yaml")


def test_unknown_keys_in_a_run_file_are_still_errors(tmp_path):
    (tmp_path / "recipe.yaml").write_text("optim: {lr: 0.001}\n")
    (tmp_path / "run.yaml").write_text("base: recipe.yaml\noptim: {learning_rate: 0.5}\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(tmp_path / "run.yaml")


@pytest.mark.parametrize("path", sorted(CONFIG.glob("train_*.yaml")), ids=lambda p: p.name)
def test_every_shipped_training_config_loads(path):
    config = load_config(path)
    assert config.run.out.startswith("runs/")


def test_the_default_models_run_resolves_to_its_recipe():
    config = load_config(CONFIG / "train_prior_vx10s8.yaml")
    assert dict(config.model.overrides) == {"decode_stride": 8, "voxel_size": 0.1}
    assert config.data.source == "scans" and config.clicks.corrective_policy == "prior"
    assert config.optim.ema_decay == 0.999 and config.run.time_budget_min == 130

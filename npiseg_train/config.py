"""Typed training configuration: frozen dataclasses read from a YAML file.

The YAML has one mapping per section (``model``, ``data``, ``clicks``, ``optim``, ``run``);
unknown keys are errors so a typo never silently falls back to a default. Only the CLI reads
YAML; the library takes ``TrainConfig`` objects.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from npiseg_ros.core.build import preset_config
from npiseg_ros.core.config import ModelConfig
from npiseg_ros.core.errors import ConfigError

DATA_SOURCES = ("synth", "benchmark", "scans")
SCENE_KINDS = ("lidar", "indoor")


@dataclass(frozen=True)
class ModelSection:
    """Which model to train: a named preset (``core.build``) plus field overrides."""

    preset: str = "small"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def model_config(self) -> ModelConfig:
        return preset_config(self.preset, **dict(self.overrides))


@dataclass(frozen=True)
class DataSection:
    """Where training scenes come from and how each is cut down and augmented.

    Attributes:
        source: ``synth`` (generate scenes on the fly, never repeating), ``benchmark``
            (read the benchmark-format folders in ``roots``) or ``scans`` (folders of whole
            labelled scans, ``.npz`` / ``.ply`` / ``.pcd``, in ``roots``: each file is
            voxelised once and cached with its voxel graph; a step crops it and applies one of
            the 8 exact grid symmetries, flips and quarter turns about z).
        kinds: scene kinds to generate (``synth``), drawn in turn per batch slot.
        roots: benchmark folders (``benchmark``) or scan folders (``scans``).
        root_weights: ``scans``: probability weight of each root (a root is drawn by weight,
            then one of its files uniformly), so a domain with few files (6 indoor rooms
            against 33 LiDAR sweeps) gets the share of steps it needs; empty = every file
            equally likely.
        seed: seed of the training-scene stream (validation uses ``val_seed``).
        max_voxels: voxel cap per training scene; larger scenes are cropped to the nearest
            voxels (horizontal distance) around a random anchor object.
        min_object_voxels: objects with fewer voxels in the crop are never targets.
        flip: random x / y mirror; rotate_z: random rotation about z (full circle);
        scale: (low, high) uniform scale factor; jitter_m: Gaussian jitter std, metres;
        dropout: (low, high) fraction of points randomly removed before voxelisation;
        color_jitter: std of per-scene brightness / per-point colour noise (rgb models).
        drop_colors: probability of removing a coloured scene's colours (the session then
            feeds zeros, as for LiDAR), so colourless indoor scans work too.
        val_roots: benchmark folders used for periodic validation.
        val_samples: validation samples per folder (first N of ``val_list.json``).
        targets: ``scans``: which objects of a scan are targets (``npiseg_ros.eval.targets``):
            ``raw`` (the file's instances as stored, box instances with the road under the
            wheels), ``things`` (clean instances), ``stuff`` (stuff pieces) or ``mixed``
            (both: any object a user may click).
        thing_fraction: ``scans``: probability that a step's anchor object (the crop's centre
            and the first target) is a thing (car, person...; ``things`` / ``mixed``
            targets), another object otherwise; None draws every object alike (earlier runs).
        exclude: ``scans``: glob patterns of file names left out of ``roots`` (a
            leave-one-dataset-out run: ``[pandaset_*]``).
    """

    source: str = "synth"
    kinds: tuple[str, ...] = ("lidar",)
    roots: tuple[str, ...] = ()
    root_weights: tuple[float, ...] = ()
    seed: int = 0
    max_voxels: int = 25000
    min_object_voxels: int = 20
    flip: bool = True
    rotate_z: bool = True
    scale: tuple[float, float] = (0.9, 1.1)
    jitter_m: float = 0.005
    dropout: tuple[float, float] = (0.0, 0.2)
    color_jitter: float = 0.05
    drop_colors: float = 0.0
    val_roots: tuple[str, ...] = ()
    val_samples: int = 8
    targets: str = "raw"
    thing_fraction: float | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from npiseg_ros.eval.targets import TARGET_KINDS

        if self.thing_fraction is not None and not 0.0 <= self.thing_fraction <= 1.0:
            raise ConfigError(f"data.thing_fraction must be in [0, 1] or null, "
                              f"got {self.thing_fraction!r}")

        if self.targets not in TARGET_KINDS or self.targets == "classes":
            raise ConfigError(f"data.targets must be one of {TARGET_KINDS[:-1]}, "
                              f"got {self.targets!r}")
        if self.source not in DATA_SOURCES:
            raise ConfigError(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
        unknown = [k for k in self.kinds if k not in SCENE_KINDS]
        if unknown or not self.kinds:
            raise ConfigError(f"data.kinds must be a non-empty subset of {SCENE_KINDS}")
        if self.source in ("benchmark", "scans") and not self.roots:
            raise ConfigError(f"data.source {self.source!r} needs data.roots")
        if self.root_weights:
            if self.source != "scans" or len(self.root_weights) != len(self.roots):
                raise ConfigError("data.root_weights needs data.source 'scans' and one weight "
                                  f"per root ({len(self.roots)}), got {list(self.root_weights)}")
            if min(self.root_weights) < 0 or sum(self.root_weights) <= 0:
                raise ConfigError("data.root_weights must be >= 0 with a positive sum, got "
                                  f"{list(self.root_weights)}")
        if self.max_voxels < 100:
            raise ConfigError(f"data.max_voxels must be >= 100, got {self.max_voxels}")


@dataclass(frozen=True)
class ClickSection:
    """RITM-style click sampling (paper D.2).

    Attributes:
        max_objects: targets per sample drawn uniformly from 1..max_objects.
        max_positive: random positive clicks per object, 1..max_positive (first one deepest).
        max_negative: random background clicks, 1..max_negative.
        max_corrective_rounds: simulated corrective clicks without gradient, 0..N rounds.
        num_samples: Monte-Carlo latent samples in the forward with gradient.
        corrective_policy: whose errors the corrective clicks follow: ``model`` (a decoder
            pass per round) or ``prior`` (geodesic-prior models: region growing's errors,
            milliseconds per round; see ``clicks.corrective_rounds``).
    """

    max_objects: int = 10
    max_positive: int = 3
    max_negative: int = 5
    max_corrective_rounds: int = 5
    num_samples: int = 2
    corrective_policy: str = "model"

    def __post_init__(self) -> None:
        from npiseg_train.clicks import CORRECTIVE_POLICIES

        if self.corrective_policy not in CORRECTIVE_POLICIES:
            raise ConfigError(f"clicks.corrective_policy must be one of {CORRECTIVE_POLICIES}, "
                              f"got {self.corrective_policy!r}")


@dataclass(frozen=True)
class OptimSection:
    """AdamW with gradient clipping, one step-wise LR drop and the KL-weight ramp.

    Attributes:
        lr_drop_fraction: at this fraction of ``run.max_steps`` the LR is multiplied by
            ``lr_drop_factor`` (paper: x0.1 after 500 of 600 epochs).
        kl_start, kl_end: lambda_kl ramps linearly between them over ``run.max_steps``.
        class_balance: CE weight exponent on class frequency (0 = paper; see
            ``losses.class_balance_weights``).
        schedule: ``step`` (one drop at ``lr_drop_fraction``, by steps) or ``cosine`` (cosine
            decay to ``lr * min_lr_factor`` over the run's progress; with
            ``run.time_budget_min`` the progress is training time spent / budget, so a run
            always completes its schedule and KL ramp within the wall-clock budget, and a
            resumed run continues exactly where it stopped).
        min_lr_factor: final LR factor of the cosine schedule.
        prior_lr_scale: learning-rate factor of the geodesic prior's scalars (radius,
            sharpness, attention decay, correction gate): single numbers that Adam would
            otherwise move by only ~lr per step.
        free_bits: KL floor per latent group, nats (0 = the paper's plain KL; see
            ``npiseg_train.losses``).
        best_of_samples: weight of the relaxed best-of-S loss on the prior samples (0 = off).
        ema_decay: exponential moving average of the weights (0 = off). With it, the run's
            exported ``model.safetensors`` (what evaluation and shipping use) and its
            validation hold the averaged weights, warmed up as min(decay, (1 + n) / (10 + n))
            after n updates; the training checkpoint keeps both for an exact resume.
    """

    lr: float = 5e-4
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    lr_drop_fraction: float = 0.85
    lr_drop_factor: float = 0.1
    kl_start: float = 0.0005
    kl_end: float = 0.005
    class_balance: float = 0.0
    prior_lr_scale: float = 10.0
    schedule: str = "step"
    min_lr_factor: float = 0.05
    ema_decay: float = 0.0
    free_bits: float = 0.0
    best_of_samples: float = 0.0

    def __post_init__(self) -> None:
        if self.free_bits < 0 or self.best_of_samples < 0:
            raise ConfigError("optim.free_bits and optim.best_of_samples must be >= 0")
        if self.schedule not in ("step", "cosine"):
            raise ConfigError(f"optim.schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class RunSection:
    """Length, batch, logging and checkpoint cadence of a run.

    Attributes:
        batch_size: scenes per optimiser step per process.
        checkpoint_every / val_every / log_every: in optimiser steps (0 = never).
        val_max_clicks: click budget per object of the periodic validation.
        threads: torch intra-op threads per process (0 = leave torch's default).
        sparse_backend: ``auto`` (spconv when installed, else torch), ``torch`` or ``spconv``;
            checkpoints do not depend on it.
        device: ``auto``, ``cpu`` or ``cuda``.
        time_budget_min: total training minutes of the run across resumes (0 = progress by
            steps only); the run ends when the budget or ``max_steps`` is used up.
        init_from: a model checkpoint (``.safetensors``) whose weights start the run
            (fine-tuning, e.g. a per-domain model from the joint one); its weights must fit
            this run's model exactly, config fields that change no parameter (e.g.
            ``decode_stride``) may differ. Optimiser, step and schedule start fresh. Ignored
            on resume (the run's own state is loaded instead).
    """

    max_steps: int = 1000
    batch_size: int = 2
    seed: int = 0
    out: str = "runs/train"
    checkpoint_every: int = 100
    val_every: int = 200
    log_every: int = 1
    val_max_clicks: int = 10
    threads: int = 2
    sparse_backend: str = "auto"
    device: str = "auto"
    time_budget_min: float = 0.0
    init_from: str = ""


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    clicks: ClickSection = field(default_factory=ClickSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["model"]["overrides"] = dict(self.model.overrides)
        return values

    def replace_run(self, **changes: Any) -> "TrainConfig":
        """A copy with fields of the ``run`` section changed (CLI overrides)."""
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))


_SECTIONS = {"model": ModelSection, "data": DataSection, "clicks": ClickSection,
             "optim": OptimSection, "run": RunSection}


def _section(kind: type, values: Mapping[str, Any], name: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in section {name!r}; valid: {sorted(known)}")
    converted = {}
    for key, value in values.items():
        # YAML gives lists; the frozen dataclasses keep tuples so configs stay hashable.
        converted[key] = tuple(value) if isinstance(value, list) else value
    return kind(**converted)


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Build a ``TrainConfig`` from nested mappings, rejecting unknown sections and keys."""
    unknown = sorted(set(values) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config sections {unknown}; valid: {sorted(_SECTIONS)}")
    sections = {name: _section(kind, values.get(name) or {}, name)
                for name, kind in _SECTIONS.items()}
    config = TrainConfig(**sections)
    config.model.model_config()  # fail early on a bad preset or override
    return config


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One YAML config with its ``base:`` chain merged in (the file's own values win)."""
    import yaml

    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"training configs form a cycle: {chain}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read training config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a training config must be a mapping of sections")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a file name, got {base!r}")
    return merge_config(_read_yaml(path.parent / base, (*seen, path)), values)


def merge_config(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, other values replace."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a YAML training config (see ``config/train_*.yaml``). A top-level ``base: FILE``
    (relative to the config's folder) starts from another config, so a run's file holds only
    what differs from its recipe."""
    return config_from_dict(_read_yaml(Path(path)))

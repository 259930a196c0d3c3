"""Exact-resume training state, stored without pickled objects.

``<dir>/model.safetensors``: the model (``core.checkpoint`` format: weights + config JSON).
``<dir>/state.pt``: ``torch.save`` of plain tensors / numbers / strings / lists / dicts only --
optimiser and scheduler state dicts, RNG states, the step and the training config -- read back
with ``torch.load(weights_only=True)``, which refuses anything that would run code.

A directory is written beside the target and renamed over it, so a crash mid-save leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from npiseg_ros.core.checkpoint import load_weights, read_checkpoint, save_checkpoint
from npiseg_ros.core.errors import CheckpointError
from npiseg_ros.core.model import NPISeg3D

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
EMA_FILE = "ema.safetensors"
"""The averaged weights of a run with ``optim.ema_decay`` > 0 (same format as the model)."""


def capture_rng() -> dict[str, Any]:
    """Global RNG states (torch, numpy legacy, python) as plain values."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(position), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "python": {"version": int(version), "state": list(python_state),
                       "gauss": python_gauss}}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]),
                     python_state["gauss"]))


def save_training_state(directory: str | os.PathLike, model: NPISeg3D,
                        optimiser: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, step: int,
                        config: dict[str, Any], metadata: dict[str, Any],
                        extra: dict[str, float] | None = None,
                        ema_model: NPISeg3D | None = None) -> Path:
    """Write model + optimiser + scheduler + RNG + step (+ ``extra`` numbers, e.g. the
    training seconds spent, + the EMA weights) atomically to ``directory``."""
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".saving")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_checkpoint(staging / MODEL_FILE, model, {**metadata, "step": step})
    if ema_model is not None:
        save_checkpoint(staging / EMA_FILE, ema_model, {**metadata, "step": step})
    torch.save({"step": int(step), "optimiser": optimiser.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": capture_rng(), "config": config,
                "extra": dict(extra or {})},
               staging / STATE_FILE)
    previous = directory.with_name(directory.name + ".old")
    if directory.exists():
        if previous.exists():
            shutil.rmtree(previous)
        directory.rename(previous)
    staging.rename(directory)
    if previous.exists():
        shutil.rmtree(previous)
    return directory


def load_training_state(directory: str | os.PathLike, model: NPISeg3D,
                        optimiser: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler,
                        ema_model: NPISeg3D | None = None) -> dict[str, Any]:
    """Restore everything ``save_training_state`` wrote; returns the state dict (step, config).

    ``ema_model`` (a run with EMA) gets the saved averaged weights, or the model's own when
    the checkpoint has none (a run that turns EMA on when resumed starts averaging there).

    Raises:
        CheckpointError: missing files or a model of another config.
    """
    directory = Path(directory)
    for name in (MODEL_FILE, STATE_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} is not a training checkpoint: no {name}")
    config, tensors, _ = read_checkpoint(directory / MODEL_FILE)
    if config != model.config:
        raise CheckpointError(f"{directory} holds a model of another config: {config} "
                              f"vs {model.config}")
    load_weights(model, tensors, source=str(directory / MODEL_FILE))
    if ema_model is not None:
        if (directory / EMA_FILE).is_file():
            _, tensors, _ = read_checkpoint(directory / EMA_FILE)
        load_weights(ema_model, tensors, source=str(directory / EMA_FILE))
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    return state

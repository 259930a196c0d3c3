"""Model checkpoints as safetensors files: weights + config + format version; never pickle.

A checkpoint holds the model's state dict as tensors and, in the safetensors header metadata,
``format`` ("npiseg3d"), ``format_version``, ``config`` (ModelConfig as JSON) and ``metadata``
(free JSON: training command, data, metrics). Loading parses only that header and raw tensor
bytes, so a malicious file cannot execute code.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from npiseg_ros.core.config import ModelConfig
from npiseg_ros.core.errors import CheckpointError
from npiseg_ros.core.model import NPISeg3D

FORMAT_NAME = "npiseg3d"
FORMAT_VERSION = 1

_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

MAX_CONFIG_INT = 8192
"""Largest integer a checkpoint's model config may hold (widths, layer and query counts): the
paper model's largest is 1024. A larger value in a damaged or hostile file would make building
the model allocate without bound before the weights could be checked against it."""
MAX_CONFIG_LAYERS = 64
"""Largest ``num_decoder_layers`` (the paper's model has 4): layers are modules, and even on
the meta device thousands of them take a minute and a gigabyte to build."""


def save_checkpoint(path: str | os.PathLike, model: NPISeg3D,
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` atomically (temp file + rename) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous()
               for name, tensor in model.state_dict().items()}
    header = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION),
              "config": json.dumps(model.config.to_dict(), sort_keys=True),
              "metadata": json.dumps(metadata or {}, sort_keys=True)}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=header)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor],
                                                      dict[str, Any]]:
    """Parse a checkpoint into (config, state dict, metadata) without building a model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    with open(path, "rb") as stream:
        head = stream.read(8)
    if head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"{path} is a pickled PyTorch file; pickles can run arbitrary code and are refused. "
            "Re-save it once, in a trusted environment, with npiseg_ros.core.checkpoint.save_checkpoint")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except MemoryError:
        raise
    except Exception as error:  # SafetensorError, OSError, ValueError, ...: all "unreadable"
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint "
                              f"(corrupt or truncated?): {error}") from error
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is a safetensors file but not an npiseg3d checkpoint "
                              f"(format={header.get('format')!r})")
    version = header.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path} has checkpoint format version {version}; this build "
                              f"reads version {FORMAT_VERSION}")
    try:
        values = json.loads(header["config"])
        _check_config_values(values)
        config = ModelConfig.from_dict(values)
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as error:
        # ValueError covers json.JSONDecodeError and ConfigError.
        raise CheckpointError(f"{path} has an invalid model config: {error!r}") from error
    return config, tensors, metadata


def _check_config_values(values: Any) -> None:
    """Types and sizes of a config read from a file, before anything is built from it."""
    if not isinstance(values, dict):
        raise TypeError(f"the config must be a JSON object, got {type(values).__name__}")
    defaults = {field.name: field.default for field in dataclasses.fields(ModelConfig)}
    for name, value in values.items():
        default = defaults.get(name)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(f"config {name} must be true/false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"config {name} must be an integer, got {value!r}")
            limit = MAX_CONFIG_LAYERS if name == "num_decoder_layers" else MAX_CONFIG_INT
            if not 0 <= value <= limit:
                raise ValueError(f"config {name}={value} is outside [0, {limit}]")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                raise TypeError(f"config {name} must be a finite number, got {value!r}")
        elif isinstance(default, str) and not (isinstance(value, str) and len(value) <= 256):
            raise TypeError(f"config {name} must be a short string, got {str(value)[:80]!r}")


def _check_shapes_before_building(config: ModelConfig, tensors: dict[str, torch.Tensor],
                                  backend: str, source: str) -> None:
    """Build the model on the meta device (no memory) and compare it with ``tensors``, so a
    config that does not fit the file's weights is refused before real allocation."""
    try:
        with torch.device("meta"):
            probe = NPISeg3D(config, backend=backend)
    except Exception as error:  # e.g. heads not dividing the width
        raise CheckpointError(f"{source}: cannot build a model from its config: {error!r}") \
            from error
    load_weights_check(probe.state_dict(), tensors, source)


def load_weights_check(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                       source: str) -> None:
    """Raise CheckpointError unless ``tensors`` has exactly the keys and shapes of ``expected``."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(name for name in set(expected) & set(tensors)
                        if expected[name].shape != tensors[name].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit this model config (a checkpoint from another config?): "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected "
            f"{unexpected[:3]}, {len(mismatched)} with other shapes {mismatched[:3]}")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               backend: str = "torch") -> NPISeg3D:
    """Build the model a checkpoint describes and load its weights (strictly)."""
    config, tensors, _ = read_checkpoint(path)
    _check_shapes_before_building(config, tensors, backend, str(path))
    model = NPISeg3D(config, backend=backend)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval()


def load_weights(model: NPISeg3D, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or mis-shaped key is an error."""
    load_weights_check(model.state_dict(), tensors, source)
    model.load_state_dict(tensors, strict=True)


def init_weights_from(model: NPISeg3D, path: str | os.PathLike) -> dict[str, tuple[Any, Any]]:
    """Start ``model`` (fine-tuning) from a checkpoint's weights; the configs may differ in
    fields that change no parameter (e.g. ``decode_stride``, graph weights), but every weight
    must fit exactly. Returns the differing config fields: name -> (checkpoint, model).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the model.
    """
    config, tensors, _ = read_checkpoint(path)
    load_weights(model, tensors, source=str(path))
    return {name: (value, getattr(model.config, name))
            for name, value in config.to_dict().items() if getattr(model.config, name) != value}


def load_checkpoint_into(model: NPISeg3D, path: str | os.PathLike) -> dict[str, Any]:
    """Load weights into an existing model, refusing checkpoints made for another config."""
    config, tensors, metadata = read_checkpoint(path)
    if config != model.config:
        differing = {name: (value, getattr(model.config, name))
                     for name, value in config.to_dict().items()
                     if getattr(model.config, name) != value}
        raise CheckpointError(f"{path} was saved for another model config; differing fields "
                              f"(checkpoint, model): {differing}")
    load_weights(model, tensors, source=str(path))
    return metadata

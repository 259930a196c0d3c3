"""Model checkpoints as safetensors files: weights + config + format version; never pickle.

A checkpoint holds the model's state dict as tensors and, in the safetensors header metadata,
``format`` ("npiseg3d"), ``format_version``, ``config`` (ModelConfig as JSON) and ``metadata``
(free JSON: training command, data, metrics). Loading parses only that header and raw tensor
bytes, so a malicious file cannot execute code.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from npiseg_ros.core.config import ModelConfig
from npiseg_ros.core.errors import CheckpointError, ConfigError
from npiseg_ros.core.model import NPISeg3D

FORMAT_NAME = "npiseg3d"
FORMAT_VERSION = 1

_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


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
    except (SafetensorError, OSError, ValueError) as error:
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
        config = ModelConfig.from_dict(json.loads(header["config"]))
        metadata = json.loads(header.get("metadata", "{}"))
    except (KeyError, json.JSONDecodeError, TypeError, ConfigError) as error:
        raise CheckpointError(f"{path} has an invalid model config: {error}") from error
    return config, tensors, metadata


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               backend: str = "torch") -> NPISeg3D:
    """Build the model a checkpoint describes and load its weights (strictly)."""
    config, tensors, _ = read_checkpoint(path)
    model = NPISeg3D(config, backend=backend)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval()


def load_weights(model: NPISeg3D, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``tensors`` into ``model``; any missing, unexpected or mis-shaped key is an error."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(name for name in set(expected) & set(tensors)
                        if expected[name].shape != tensors[name].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit this model config (a checkpoint from another config?): "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected "
            f"{unexpected[:3]}, {len(mismatched)} with other shapes {mismatched[:3]}")
    model.load_state_dict(tensors, strict=True)


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

"""Which model segments which cloud: the default model and the optional colour-cloud model.

The package ships two checkpoints (``npiseg_ros.resources``): the default model for clouds
without colour (LiDAR sweeps) and a model for clouds whose colours carry colour (RGB-D rooms),
each at its own voxel size. ``ModelRouter`` holds the pair, resolves the ``checkpoint`` /
``rgb_checkpoint`` values every tool takes (``auto`` = the shipped ones) and picks the model
and voxel size per cloud; the ROS node, ``npiseg-eval`` and ``npiseg-annotate`` all use it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from npiseg_ros.core.errors import CheckpointError, ConfigError
from npiseg_ros.core.model import NPISeg3D
from npiseg_ros.core.scene import PointCloud, Scene
from npiseg_ros.resources import share_candidates, shipped_checkpoint, shipped_rgb_checkpoint

__all__ = ["ModelRouter", "resolve_checkpoint", "resolve_rgb_checkpoint", "resolve_device",
           "has_chroma", "AUTO_CHECKPOINT", "CHROMA_THRESHOLD"]

AUTO_CHECKPOINT = "auto"
"""``checkpoint`` value meaning: the checkpoint shipped with the package (``checkpoints/``)."""

CHROMA_THRESHOLD = 0.02
"""A point has colour when its RGB channels differ by more than this (of the [0, 1] range)."""

def has_chroma(colors: np.ndarray) -> bool:
    """Whether (N, 3) colours in [0, 1] carry colour: some point's channels differ by more than
    ``CHROMA_THRESHOLD``. All-zero, constant or grey (R = G = B) colours, what LiDAR sweeps get
    in formats that require colours, do not."""
    colors = np.asarray(colors)
    spread = colors.max(axis=1, initial=-np.inf) - colors.min(axis=1, initial=np.inf)
    return bool(np.any(spread[np.isfinite(spread)] > CHROMA_THRESHOLD))


class ModelRouter:
    """The default model and the optional model for coloured clouds, picked per cloud.

    Args:
        default: the model for clouds without colour (and for every cloud without ``rgb``).
        rgb: the model for clouds whose colours carry colour (:func:`has_chroma`), or None.
        voxel_size: voxel edge in metres for every cloud; None = each model's own (the size it
            was trained at: the shipped pair differs, 10 cm and 5 cm).
        paths: the checkpoint files the models came from (``role -> path``), for messages.
    """

    def __init__(self, default: NPISeg3D, rgb: NPISeg3D | None = None, *,
                 voxel_size: float | None = None,
                 paths: dict[str, Path] | None = None) -> None:
        if voxel_size is not None and not voxel_size > 0:
            raise ConfigError(f"voxel_size must be > 0 metres or None, got {voxel_size}")
        self.default = default
        self.rgb = rgb
        self.voxel_size = None if voxel_size is None else float(voxel_size)
        self.paths = dict(paths or {})

    @classmethod
    def load(cls, checkpoint: str = AUTO_CHECKPOINT, rgb_checkpoint: str = AUTO_CHECKPOINT, *,
             device: str | torch.device = "cpu", voxel_size: float | None = None,
             cwd: Path | None = None) -> "ModelRouter":
        """Resolve and load the checkpoints (:func:`resolve_checkpoint`,
        :func:`resolve_rgb_checkpoint`); never an untrained model.

        Raises:
            CheckpointError: a checkpoint not found or unreadable.
        """
        from npiseg_ros.core.checkpoint import load_model

        path = resolve_checkpoint(checkpoint, cwd=cwd)
        rgb_path = resolve_rgb_checkpoint(rgb_checkpoint, checkpoint, cwd=cwd)
        paths = {"default": path} if rgb_path is None else {"default": path, "rgb": rgb_path}
        return cls(load_model(path, device=device),
                   None if rgb_path is None else load_model(rgb_path, device=device),
                   voxel_size=voxel_size, paths=paths)

    def place(self, device: str | torch.device | None) -> torch.device:
        """Move every model to ``device`` (:func:`resolve_device`: ``auto``, None = where the
        default model is, ``cpu``, ``cuda:N``) in eval mode; returns the device."""
        resolved = resolve_device(device, self.default)
        self.default = self.default.to(resolved).eval()
        if self.rgb is not None:
            self.rgb = self.rgb.to(resolved).eval()
        return resolved

    def model_for(self, colors: np.ndarray | None) -> NPISeg3D:
        """The model for a cloud with these (N, 3) colours in [0, 1], or none."""
        if self.rgb is not None and colors is not None and has_chroma(colors):
            return self.rgb
        return self.default

    def role_of(self, model: NPISeg3D) -> str:
        """``default`` or ``rgb``: which of the held models ``model`` is."""
        return "rgb" if model is not self.default else "default"

    def voxel_size_of(self, model: NPISeg3D) -> float:
        """Voxel edge (metres) clouds get with ``model``: the router's ``voxel_size`` when set,
        else the model's own."""
        if self.voxel_size is not None:
            return self.voxel_size
        return float(model.config.voxel_size)

    def voxel_size_for(self, colors: np.ndarray | None) -> float:
        """Voxel edge (metres) a cloud with these colours (or none) gets."""
        return self.voxel_size_of(self.model_for(colors))

    def encode(self, cloud: PointCloud) -> tuple[NPISeg3D, Scene]:
        """Encode ``cloud`` with its model at that model's voxel size; (model, scene)."""
        model = self.model_for(cloud.colors)
        return model, model.encode(cloud, voxel_size=self.voxel_size_of(model))


def resolve_checkpoint(checkpoint: str, cwd: Path | None = None) -> Path:
    """The checkpoint file a ``checkpoint`` value names.

    - ``auto``: the shipped checkpoint (:func:`npiseg_ros.resources.shipped_checkpoint`, which
      looks in the source checkout, the install prefix's ``share/npiseg_ros/checkpoints`` and
      the ament index);
    - an absolute path (``~`` expanded): that file;
    - a relative path: ``cwd / path``, then ``<share>/path`` for every place the package's
      shared files may be installed (``checkpoints/x.safetensors`` works from anywhere);
    - empty: no checkpoint.

    Raises:
        CheckpointError: no file found (or empty), with every path tried.
    """
    if checkpoint == AUTO_CHECKPOINT:
        found = shipped_checkpoint()
        if found:
            return Path(found)
        tried = [str(path / "*.safetensors") for path in share_candidates("checkpoints")]
        reason = "checkpoint 'auto': no shipped checkpoint found; looked for " + ", ".join(tried)
    elif checkpoint:
        path = Path(checkpoint).expanduser()
        candidates = [path] if path.is_absolute() else (
            [(cwd or Path.cwd()) / path] + share_candidates(str(path)))
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is not None:
            return found.absolute()
        reason = (f"checkpoint {checkpoint!r} not found; tried "
                  + ", ".join(str(candidate) for candidate in candidates))
    else:
        reason = "no checkpoint given (checkpoint is empty)"
    raise CheckpointError(reason)


def resolve_rgb_checkpoint(rgb_checkpoint: str, checkpoint: str,
                           cwd: Path | None = None) -> Path | None:
    """The model file for coloured clouds an ``rgb_checkpoint`` value names, or None.

    - ``auto``: the shipped RGB-cloud model when ``checkpoint`` is ``auto`` too and the package
      ships one (:func:`npiseg_ros.resources.shipped_rgb_checkpoint`); else None (a user who
      names their own ``checkpoint`` gets that model for every cloud);
    - empty: None (the ``checkpoint`` model for every cloud);
    - a path: looked up like ``checkpoint``; not found is an error.

    Raises:
        CheckpointError: a named file that does not exist.
    """
    if rgb_checkpoint == AUTO_CHECKPOINT:
        found = shipped_rgb_checkpoint() if checkpoint == AUTO_CHECKPOINT else ""
        return Path(found) if found else None
    if not rgb_checkpoint:
        return None
    try:
        return resolve_checkpoint(rgb_checkpoint, cwd=cwd)
    except CheckpointError as error:
        raise CheckpointError(f"rgb_checkpoint: {error}") from None


def resolve_device(device: str | torch.device | None, model: torch.nn.Module) -> torch.device:
    """``auto`` -> CUDA when available else CPU; None -> the model's device.

    Raises:
        ConfigError: an unknown device, or CUDA asked for where there is none.
    """
    if device is None:
        return next(model.parameters()).device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
    return resolved

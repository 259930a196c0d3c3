"""Build the core ``SegmentationSession`` the node wraps, from the node's settings."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from npiseg_ros.core.errors import CheckpointError
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.ros.params import NodeSettings
from npiseg_ros.ros.processes import share_path, shipped_checkpoint

__all__ = ["build_session", "AUTO_CHECKPOINT"]

AUTO_CHECKPOINT = "auto"
"""``checkpoint`` value meaning: the shipped checkpoint if there is one, else untrained."""

log = logging.getLogger(__name__)


def _load_model(settings: NodeSettings):
    """The model named by ``settings.checkpoint``, or an untrained preset when it is empty.

    ``auto`` picks :func:`shipped_checkpoint`. A relative path that does not exist relative to
    the working directory is looked up in the package's shared files (``checkpoints/...``).
    """
    checkpoint = settings.checkpoint
    if checkpoint == AUTO_CHECKPOINT:
        checkpoint = shipped_checkpoint()
    if checkpoint:
        from npiseg_ros.core.checkpoint import load_model

        path = Path(checkpoint).expanduser()
        if not path.is_absolute() and not path.is_file():
            path = share_path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist; set the 'checkpoint' "
                                  "parameter to a .safetensors file")
        return load_model(path, device="cpu"), f"checkpoint {path}"
    from npiseg_ros.core.build import build_model, preset_config

    # Seeded so that restarts build identical weights (resumed annotations decode the same).
    torch.manual_seed(settings.seed)
    model = build_model(preset_config(settings.model_preset))
    return model, f"UNTRAINED '{settings.model_preset}' model"


def build_session(settings: NodeSettings) -> tuple[SegmentationSession, str]:
    """Load the model and wrap it in a session; returns (session, what was loaded).

    Raises:
        CheckpointError / ConfigError: unreadable checkpoint, unknown preset or device.
    """
    model, description = _load_model(settings)
    if settings.voxel_size > 0 and settings.voxel_size != model.config.voxel_size:
        log.warning("voxel_size %.3f m overrides the model's %.3f m; it was trained at the latter",
                    settings.voxel_size, model.config.voxel_size)
    session = SegmentationSession(
        model, device=settings.device, num_samples=settings.num_samples,
        scene_weight=settings.scene_weight, max_click_distance=settings.max_click_distance,
        seed=settings.seed, max_points=settings.max_points,
        voxel_size=settings.voxel_size if settings.voxel_size > 0 else None)
    return session, f"{description} on {session.device}"

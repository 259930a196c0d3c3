"""Build the core ``SegmentationSession`` the node wraps, from the node's settings.

Which checkpoint serves which cloud is ``core.router``'s rule (shared with ``npiseg-eval`` and
``npiseg-annotate``); the node adds only its test switch ``allow_untrained`` and the hint that
names its parameters.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from npiseg_ros.core import router
from npiseg_ros.core.errors import CheckpointError
from npiseg_ros.core.router import AUTO_CHECKPOINT, ModelRouter, resolve_rgb_checkpoint
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.ros.params import NodeSettings

__all__ = ["build_session", "resolve_checkpoint", "resolve_rgb_checkpoint", "AUTO_CHECKPOINT"]

log = logging.getLogger(__name__)

_HINT = ("set the 'checkpoint' parameter to a .safetensors file (absolute, or relative to the "
         "working directory or the package share folder); allow_untrained: true runs an "
         "UNTRAINED model (tests only, labels are meaningless)")


def resolve_checkpoint(checkpoint: str, allow_untrained: bool = False,
                       cwd: Path | None = None) -> Path | None:
    """The checkpoint file the ``checkpoint`` parameter names (``core.router.resolve_checkpoint``:
    ``auto`` = the shipped one; a path, absolute or relative to ``cwd`` or the share folder).

    None when nothing is found and ``allow_untrained`` (a test switch): the caller then builds
    an untrained model.

    Raises:
        CheckpointError: nothing found and ``allow_untrained`` is false; the message lists
            every path tried and how to fix the parameter.
    """
    try:
        return router.resolve_checkpoint(checkpoint, cwd=cwd)
    except CheckpointError as error:
        if allow_untrained:
            return None
        raise CheckpointError(f"{error}; {_HINT}") from None


def _default_model(settings: NodeSettings):
    """The model named by ``settings.checkpoint`` (see :func:`resolve_checkpoint`), or an
    untrained ``model_preset`` model when none is found and ``allow_untrained`` is set;
    returns (model, its path or None)."""
    path = resolve_checkpoint(settings.checkpoint, settings.allow_untrained)
    if path is not None:
        from npiseg_ros.core.checkpoint import load_model

        return load_model(path, device="cpu"), path
    from npiseg_ros.core.build import build_model, preset_config

    # Seeded so that restarts build identical weights (resumed annotations decode the same).
    torch.manual_seed(settings.seed)
    return build_model(preset_config(settings.model_preset)), None


def build_router(settings: NodeSettings) -> tuple[ModelRouter, str]:
    """The node's models (``checkpoint``, ``rgb_checkpoint``, ``voxel_size``); returns the
    router and what was loaded.

    Raises:
        CheckpointError / ConfigError: unreadable checkpoint, unknown preset.
    """
    model, path = _default_model(settings)
    rgb_path = resolve_rgb_checkpoint(settings.rgb_checkpoint, settings.checkpoint)
    rgb_model = None
    if rgb_path is not None:
        from npiseg_ros.core.checkpoint import load_model

        rgb_model = load_model(rgb_path, device="cpu")
    paths = {role: found for role, found in (("default", path), ("rgb", rgb_path)) if found}
    models = ModelRouter(model, rgb_model, paths=paths,
                         voxel_size=settings.voxel_size if settings.voxel_size > 0 else None)
    for role, loaded in (("model", model), ("colour-cloud model", rgb_model)):
        if (loaded is not None and settings.voxel_size > 0
                and settings.voxel_size != loaded.config.voxel_size):
            log.warning("voxel_size %.3f m overrides the %s's %.3f m; it was trained at the "
                        "latter", settings.voxel_size, role, loaded.config.voxel_size)
    description = (f"checkpoint {path}" if path is not None
                   else f"UNTRAINED '{settings.model_preset}' model")
    if rgb_path is not None:
        description += f"; clouds with colours: checkpoint {rgb_path}"
    return models, description


def build_session(settings: NodeSettings) -> tuple[SegmentationSession, str]:
    """Load the models and wrap them in a session; returns (session, what was loaded).

    Raises:
        CheckpointError / ConfigError: unreadable checkpoint, unknown preset or device.
    """
    models, description = build_router(settings)
    session = SegmentationSession(
        models, device=settings.device, num_samples=settings.num_samples,
        scene_weight=settings.scene_weight, max_click_distance=settings.max_click_distance,
        seed=settings.seed, max_points=settings.max_points)
    return session, f"{description} on {session.device}"

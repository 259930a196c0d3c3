"""Build the core ``SegmentationSession`` the node wraps, from the node's settings."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from npiseg_ros.core.errors import CheckpointError
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.ros.params import NodeSettings
from npiseg_ros.resources import share_candidates, shipped_checkpoint, shipped_rgb_checkpoint

__all__ = ["build_session", "resolve_checkpoint", "resolve_rgb_checkpoint", "AUTO_CHECKPOINT"]

AUTO_CHECKPOINT = "auto"
"""``checkpoint`` value meaning: the checkpoint shipped with the package (``checkpoints/``)."""

log = logging.getLogger(__name__)


def resolve_checkpoint(checkpoint: str, allow_untrained: bool = False,
                       cwd: Path | None = None) -> Path | None:
    """The checkpoint file the ``checkpoint`` parameter names; None = build an untrained model.

    - ``auto``: the shipped checkpoint (:func:`npiseg_ros.resources.shipped_checkpoint`, which
      looks in the source checkout, the install prefix's ``share/npiseg_ros/checkpoints`` and
      the ament index);
    - an absolute path (``~`` expanded): that file;
    - a relative path: ``cwd / path``, then ``<share>/path`` for every place the package's
      shared files may be installed (``checkpoints/x.safetensors`` works from anywhere);
    - empty: no checkpoint.

    No file found (or empty) is an error listing every path tried, unless ``allow_untrained``
    (a test switch): then None, and the caller builds an untrained model.

    Raises:
        CheckpointError: nothing found and ``allow_untrained`` is false.
    """
    hint = ("set the 'checkpoint' parameter to a .safetensors file (absolute, or relative to "
            "the working directory or the package share folder); allow_untrained: true runs "
            "an UNTRAINED model (tests only, labels are meaningless)")
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
    if allow_untrained:
        return None
    raise CheckpointError(f"{reason}; {hint}")


def resolve_rgb_checkpoint(rgb_checkpoint: str, checkpoint: str,
                           cwd: Path | None = None) -> Path | None:
    """The model file for coloured clouds the ``rgb_checkpoint`` parameter names, or None.

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


def _load_model(settings: NodeSettings):
    """The model named by ``settings.checkpoint`` (see :func:`resolve_checkpoint`), or an
    untrained ``model_preset`` model when none is found and ``allow_untrained`` is set."""
    path = resolve_checkpoint(settings.checkpoint, settings.allow_untrained)
    if path is not None:
        from npiseg_ros.core.checkpoint import load_model

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
    rgb_model = None
    rgb_path = resolve_rgb_checkpoint(settings.rgb_checkpoint, settings.checkpoint)
    if rgb_path is not None:
        from npiseg_ros.core.checkpoint import load_model

        rgb_model = load_model(rgb_path, device="cpu")
        description += f"; clouds with colours: checkpoint {rgb_path}"
    for role, loaded in (("model", model), ("colour-cloud model", rgb_model)):
        if (loaded is not None and settings.voxel_size > 0
                and settings.voxel_size != loaded.config.voxel_size):
            log.warning("voxel_size %.3f m overrides the %s's %.3f m; it was trained at the "
                        "latter", settings.voxel_size, role, loaded.config.voxel_size)
    session = SegmentationSession(
        model, device=settings.device, num_samples=settings.num_samples,
        scene_weight=settings.scene_weight, max_click_distance=settings.max_click_distance,
        seed=settings.seed, max_points=settings.max_points,
        voxel_size=settings.voxel_size if settings.voxel_size > 0 else None, rgb_model=rgb_model)
    return session, f"{description} on {session.device}"

"""Plug a model into the evaluation loop: the real session with per-point confidence, and the
MC-dropout baseline as its own segmenter.

``SegmentationSession`` already implements the ``Segmenter`` protocol. ``SessionSegmenter``
wraps any session to report what evaluation needs beside ``core.types.Prediction``'s labels:
``confidence`` (N,), the model's probability of each point's predicted label (for the expected
calibration error).

``MCDropoutSession`` is the MC-dropout baseline (paper Table 6): a session whose every decode
runs the model S times with its decoder's dropout layers active (seeded) on a model trained
with dropout; the labels come from the mean softmax and the uncertainty is the largest
per-class variance of the softmax over the S passes. Everything else (voxelisation, click
snapping, the previous mask, click forcing) is the session's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from npiseg_ros.core.errors import ConfigError
from npiseg_ros.core.model import DecodeOutput, NPISeg3D
from npiseg_ros.core.router import ModelRouter
from npiseg_ros.core.scene import Scene, VoxelClicks
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.types import Prediction

__all__ = ["SessionSegmenter", "MCDropoutSession", "ScoredPrediction"]


class MCDropoutSession(SegmentationSession):
    """A session decoding by MC dropout: ``passes`` decodes with the decoder's dropout on.

    Args:
        model: one model trained with ``config.dropout > 0`` (no colour-cloud model: the
            baseline evaluates one model).
        passes: S, the dropout passes per decode (>= 1); each decodes one latent sample.
        options: the other ``SegmentationSession`` arguments; ``seed`` also seeds the dropout
            masks, so the same clicks give the same output.

    Raises:
        ConfigError: a model without dropout, a colour-cloud model, or ``passes`` < 1.
    """

    def __init__(self, model: NPISeg3D | ModelRouter, *, passes: int, **options: Any) -> None:
        if passes < 1:
            raise ConfigError(f"MC dropout needs passes >= 1, got {passes}")
        if (options.get("rgb_model") is not None
                or (isinstance(model, ModelRouter) and model.rgb is not None)):
            raise ConfigError("MC dropout evaluates one model: give a session without an "
                              "rgb_model (npiseg-eval --rgb-checkpoint none)")
        default = model.default if isinstance(model, ModelRouter) else model
        if not default.config.dropout > 0:
            raise ConfigError(
                "MC dropout needs a model trained with dropout > 0 (config.dropout is 0)")
        super().__init__(model, **options)
        self.passes = int(passes)

    def _run_model(self, model: NPISeg3D, scene: Scene, clicks: VoxelClicks,
                   previous: torch.Tensor | None, generator: torch.Generator) -> DecodeOutput:
        decoder = model.decoder
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)  # same clicks -> same dropout masks
        total = square = None
        decoder.train()  # decoder holds only dropout, layer norms and linear layers
        try:
            for _ in range(self.passes):
                probabilities = model.decode(
                    scene, clicks, previous, num_samples=1, generator=generator,
                    uncertainty=self.uncertainty, latents=self.latents,
                    scene_weight=self.scene_weight).probabilities
                total = probabilities if total is None else total + probabilities
                square = (probabilities ** 2 if square is None
                          else square + probabilities ** 2)
        finally:
            decoder.eval()
            torch.random.set_rng_state(generator_state)
        mean = total / self.passes
        variance = (square / self.passes - mean ** 2).clamp_min(0.0)
        return DecodeOutput(logits=mean.clamp_min(1e-12).log(), probabilities=mean,
                            uncertainty=variance.max(dim=1).values)


class SessionSegmenter:
    """``Segmenter`` over a ``SegmentationSession`` (or ``MCDropoutSession``) that also reports
    per-point confidence."""

    def __init__(self, session: SegmentationSession) -> None:
        self.session = session

    # ------------------------------------------------------------------ Segmenter protocol
    def set_cloud(self, xyz: np.ndarray, colors: np.ndarray | None = None,
                  intensity: np.ndarray | None = None) -> Any:
        return self.session.set_cloud(xyz, colors=colors, intensity=intensity)

    @property
    def active_model_role(self) -> str | None:
        """The session's model for the current cloud (``"default"`` / ``"rgb"``)."""
        return self.session.active_model_role

    def reset(self) -> None:
        self.session.reset()

    def add_click(self, position: Any = None, *, object_id: int,
                  point_index: int | None = None) -> Any:
        return self.session.add_click(position, object_id=object_id, point_index=point_index)

    def predict(self) -> ScoredPrediction:
        """The session's prediction plus ``confidence`` (N,) float32: the model's probability
        of each point's predicted label (the mean softmax over its samples or passes; NaN for
        dropped points; 1 before the first click)."""
        prediction = self.session.predict()
        if prediction.confidence is not None:
            return ScoredPrediction(prediction=prediction, confidence=prediction.confidence)
        labels = np.asarray(prediction.labels)
        confidence = np.full(labels.shape, np.nan, np.float32)
        if not self.session.clicks:
            confidence[labels >= 0] = 1.0
        return ScoredPrediction(prediction=prediction, confidence=confidence)


@dataclass(frozen=True)
class ScoredPrediction:
    """A ``core.types.Prediction`` with per-point ``confidence`` (N,) float32 in [0, 1]."""

    prediction: Prediction
    confidence: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.prediction.labels

    @property
    def uncertainty(self) -> np.ndarray:
        return self.prediction.uncertainty

    @property
    def suggested_click(self) -> tuple[float, float, float] | None:
        return self.prediction.suggested_click

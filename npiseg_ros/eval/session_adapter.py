"""Plug a model into the evaluation loop: the real session, plus per-point confidence and the
MC-dropout baseline.

``SegmentationSession`` already implements the ``Segmenter`` protocol. ``SessionSegmenter`` wraps
it to add what evaluation needs and ``core.types.Prediction`` does not carry:

- ``confidence`` (N,): the mean softmax over the model's samples, taken at each point's predicted
  label (for the expected calibration error);
- MC dropout (paper Table 6 baseline): with ``mc_dropout_samples = S > 0`` every decode runs the
  decoder S times with its dropout layers active (seeded) on a model trained with dropout; the
  labels come from the mean softmax and the uncertainty is the largest per-class variance of
  the softmax over the S passes.

Both hook the model's public ``decode`` (an instance attribute shadows the method), so the session
keeps doing voxelisation, click snapping, the previous mask and click forcing itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from npiseg_ros.core.model import DecodeOutput
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.types import BACKGROUND_ID, Prediction
from npiseg_ros.eval.cloud import DatasetFormatError

__all__ = ["SessionSegmenter", "ScoredPrediction"]


class SessionSegmenter:
    """``Segmenter`` over a ``SegmentationSession`` that also reports per-point confidence.

    Args:
        session: a configured session (its model, device, seed and sample count are used).
        mc_dropout_samples: 0 = the model's own uncertainty; S > 0 = MC-dropout with S passes
            (the model must have ``config.dropout > 0``).
    """

    def __init__(self, session: SegmentationSession, *, mc_dropout_samples: int = 0) -> None:
        if mc_dropout_samples < 0:
            raise DatasetFormatError("mc_dropout_samples must be >= 0")
        if mc_dropout_samples and session.rgb_model is not None:
            raise DatasetFormatError("MC dropout evaluates one model: give a session without an "
                                     "rgb_model (npiseg-eval --rgb-checkpoint none)")
        if mc_dropout_samples and not session.model.config.dropout > 0:
            raise DatasetFormatError(
                "MC dropout needs a model trained with dropout > 0 (config.dropout is 0)")
        self.session = session
        self.mc_dropout_samples = int(mc_dropout_samples)
        self._point_to_voxel: np.ndarray | None = None
        self._last_probabilities: torch.Tensor | None = None
        self._decode = session.model.decode
        if self.mc_dropout_samples:
            # MC dropout replaces the model's decode; the session's own path needs no hook
            # (its Prediction carries the confidence).
            session.model.decode = self._recording_decode

    def _recording_decode(self, scene: Any, click_voxels: torch.Tensor,
                          click_labels: torch.Tensor, *args: Any, **kwargs: Any) -> DecodeOutput:
        if not self.mc_dropout_samples:
            output = self._decode(scene, click_voxels, click_labels, *args, **kwargs)
        else:
            output = self._mc_dropout_decode(scene, click_voxels, click_labels, *args, **kwargs)
        self._last_probabilities = output.probabilities
        return output

    def _mc_dropout_decode(self, scene: Any, click_voxels: torch.Tensor,
                           click_labels: torch.Tensor, *args: Any, **kwargs: Any) -> DecodeOutput:
        decoder = self.session.model.decoder
        kwargs["num_samples"] = 1
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.session.seed)  # same clicks -> same dropout masks
        total = square = None
        decoder.train()  # decoder holds only dropout, layer norms and linear layers
        try:
            for _ in range(self.mc_dropout_samples):
                probabilities = self._decode(scene, click_voxels, click_labels, *args,
                                             **kwargs).probabilities
                total = probabilities if total is None else total + probabilities
                square = (probabilities ** 2 if square is None
                          else square + probabilities ** 2)
        finally:
            decoder.eval()
            torch.random.set_rng_state(generator_state)
        mean = total / self.mc_dropout_samples
        variance = (square / self.mc_dropout_samples - mean ** 2).clamp_min(0.0)
        return DecodeOutput(logits=mean.clamp_min(1e-12).log(), probabilities=mean,
                            uncertainty=variance.max(dim=1).values)

    # ------------------------------------------------------------------ Segmenter protocol
    def set_cloud(self, xyz: np.ndarray, colors: np.ndarray | None = None,
                  intensity: np.ndarray | None = None) -> Any:
        summary = self.session.set_cloud(xyz, colors=colors, intensity=intensity)
        self._point_to_voxel = self.session.point_to_voxel
        return summary

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
        """The session's prediction plus ``confidence`` (N,) float32: the mean softmax of each
        point's predicted label (NaN for dropped points)."""
        self._last_probabilities = None
        prediction = self.session.predict()
        labels = np.asarray(prediction.labels)
        if not self.mc_dropout_samples and prediction.confidence is not None:
            return ScoredPrediction(prediction=prediction, confidence=prediction.confidence)
        confidence = np.full(labels.shape, np.nan, np.float32)
        if self._last_probabilities is not None and self._point_to_voxel is not None:
            probabilities = self._last_probabilities.float().cpu().numpy()
            object_ids = np.array(self.session.object_ids, dtype=np.int64)
            lookup = np.full(int(max(labels.max(initial=0), object_ids.max(initial=0))) + 1, -1)
            lookup[BACKGROUND_ID] = 0
            lookup[object_ids] = np.arange(1, len(object_ids) + 1)
            column = np.where(labels >= 0, lookup[np.maximum(labels, 0)], -1)
            ok = (self._point_to_voxel >= 0) & (column >= 0)
            confidence[ok] = probabilities[self._point_to_voxel[ok], column[ok]]
        elif not self.session.clicks:
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

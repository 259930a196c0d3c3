"""Training objective of NPISeg3D (paper Eq. 9-10 and appendix D.2).

loss = sum over predictions (final + auxiliary layers) of [CE + 2 * Dice] with per-point weights
       + lambda_kl * (KL(z_s) + sum_m KL(z_o^m)),   lambda_kl ramped linearly over training.

Two options against posterior collapse (``../shared/reference/latents.md``), both off by default:

* ``free_bits``: each latent group's KL (z_s; z_o of each label) is only penalised above this
  many nats (Kingma et al. 2016), so a latent may carry a little information for free;
* ``best_of_samples``: a relaxed winner-takes-all term on the S prior samples (what inference
  draws): ``(1 - eps) * min_s L_s + eps * mean_s L_s``. A loss on the sample mean alone rewards
  samples that all agree; the minimum rewards samples that cover different plausible masks
  where the clicks leave the answer open (Rupprecht et al. 2017; Bhattacharyya et al. 2018).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from npiseg_ros.core.posterior import TrainingOutput

CE_WEIGHT = 1.0
DICE_WEIGHT = 2.0
NEAR_CLICK_RADIUS_M = 0.3
NEAR_CLICK_WEIGHT = 2.0
FAR_WEIGHT = 0.8
BEST_OF_EPSILON = 0.05
"""Share of the best-of-S term spread over all samples, so no sample stops learning."""


@dataclass(frozen=True)
class KLRamp:
    """lambda_kl rising linearly from ``start`` to ``end`` over ``steps`` (then constant)."""

    start: float = 0.0005
    end: float = 0.005
    steps: int = 10000

    def __call__(self, step: int) -> float:
        fraction = min(max(step, 0) / max(self.steps, 1), 1.0)
        return self.start + (self.end - self.start) * fraction


@dataclass
class LossTerms:
    total: Tensor
    segmentation: Tensor
    kl_scene: Tensor
    kl_objects: Tensor
    kl_weight: float

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "seg": float(self.segmentation),
                "kl_scene": float(self.kl_scene), "kl_objects": float(self.kl_objects),
                "kl_weight": self.kl_weight}


def click_distance_weights(voxel_xyz: Tensor, click_xyz: Tensor) -> Tensor:
    """(V,) per-point loss weight: 2.0 within 0.3 m of any click, 0.8 elsewhere."""
    nearest = torch.cdist(voxel_xyz, click_xyz).min(dim=1).values
    return torch.where(nearest < NEAR_CLICK_RADIUS_M, NEAR_CLICK_WEIGHT, FAR_WEIGHT)


def class_balance_weights(targets: Tensor, num_classes: int, exponent: float) -> Tensor:
    """(V,) weights proportional to (voxels of the voxel's class) ** -exponent, mean 1.

    ``exponent`` 0 = the paper (no balancing); 1 = every class weighs the same in total.
    Why: in LiDAR crops the targets are often < 5 % of the voxels, and an unbalanced CE keeps
    a freshly initialised model predicting background everywhere for hundreds of steps.
    """
    if exponent == 0.0:
        return torch.ones_like(targets, dtype=torch.float32)
    counts = torch.bincount(targets, minlength=num_classes).clamp_min(1).float()
    weights = counts.pow(-exponent)[targets]
    return weights / weights.mean()


def segmentation_loss(logits: Tensor, targets: Tensor, weights: Tensor,
                      class_balance: float = 0.0) -> Tensor:
    """Weighted CE + 2 * multi-class soft Dice over (V, C) logits and (V,) targets.

    ``weights`` (V,) are the click-distance weights; ``class_balance`` see
    ``class_balance_weights`` (applied to the CE only; Dice is balanced by construction).
    """
    weights = weights * class_balance_weights(targets, logits.shape[1], class_balance)
    cross_entropy = (F.cross_entropy(logits, targets, reduction="none") * weights).mean()
    probabilities = logits.softmax(dim=1)
    one_hot = F.one_hot(targets, logits.shape[1]).to(probabilities.dtype)
    intersection = (probabilities * one_hot).sum(dim=0)
    denominator = probabilities.sum(dim=0) + one_hot.sum(dim=0)
    dice = 1.0 - ((2.0 * intersection + 1.0) / (denominator + 1.0)).mean()
    return CE_WEIGHT * cross_entropy + DICE_WEIGHT * dice


def best_of_samples_loss(sample_logits: Tensor, targets: Tensor, weights: Tensor,
                         class_balance: float = 0.0,
                         epsilon: float = BEST_OF_EPSILON) -> Tensor:
    """Relaxed winner-takes-all over (S, V, C) per-sample logits (see the module docstring)."""
    losses = torch.stack([segmentation_loss(logits, targets, weights, class_balance)
                          for logits in sample_logits])
    if losses.shape[0] == 1:
        return losses[0]
    return (1.0 - epsilon) * losses.min() + epsilon * losses.mean()


def floored_kl(output: TrainingOutput, free_bits: float) -> tuple[Tensor, Tensor]:
    """(KL(z_s), sum of KL(z_o^m)) each group clamped from below at ``free_bits`` nats (no
    gradient below it); plain sums when ``free_bits`` is 0."""
    zero = output.logits.new_zeros(())
    kl_scene = output.kl_scene if output.kl_scene is not None else zero
    kl_objects = output.kl_objects if output.kl_objects is not None else zero
    if free_bits <= 0.0:
        return kl_scene, kl_objects
    if output.kl_scene is not None:
        kl_scene = kl_scene.clamp_min(free_bits)
    if output.kl_object_terms is not None:
        kl_objects = output.kl_object_terms.clamp_min(free_bits).sum()
    return kl_scene, kl_objects


def npiseg_loss(output: TrainingOutput, targets: Tensor, weights: Tensor,
                kl_weight: float, class_balance: float = 0.0, *, free_bits: float = 0.0,
                best_of_samples: float = 0.0) -> LossTerms:
    """The ELBO-derived loss for one scene's training decode (targets (V,) in [0, C)).

    With ``output.prior_path_logits`` (probabilistic models) the segmentation loss is put on
    the inference path (latents from the prior) AND on the posterior path, so the networks the
    node runs get the segmentation gradient, not only the KL's. ``free_bits`` and
    ``best_of_samples`` (weight of the best-of-S term): see the module docstring.
    """
    segmentation = segmentation_loss(output.logits, targets, weights, class_balance)
    if output.prior_path_logits is not None:
        segmentation = segmentation + segmentation_loss(output.prior_path_logits, targets,
                                                        weights, class_balance)
    if best_of_samples > 0.0 and output.prior_sample_logits is not None:
        segmentation = segmentation + best_of_samples * best_of_samples_loss(
            output.prior_sample_logits, targets, weights, class_balance)
    for auxiliary in output.auxiliary_logits:
        segmentation = segmentation + segmentation_loss(auxiliary, targets, weights,
                                                        class_balance)
    penalised_scene, penalised_objects = floored_kl(output, free_bits)
    total = segmentation + kl_weight * (penalised_scene + penalised_objects)
    zero = output.logits.new_zeros(())
    kl_scene = output.kl_scene if output.kl_scene is not None else zero
    kl_objects = output.kl_objects if output.kl_objects is not None else zero
    return LossTerms(total, segmentation.detach(), kl_scene.detach(), kl_objects.detach(),
                     kl_weight)

"""The training decode of NPISeg3D: latents from the posterior, KL terms (paper Eq. 9-10).

In training the latent networks also see ground-truth target points (the posterior), the
segmentation loss is put on logits decoded with posterior latents, and the KL pulls the prior
(clicks only) towards the posterior. The same forward also decodes with latents from the prior
networks, i.e. exactly what inference computes, so the loss trains what the node runs, and
returns each prior sample's logits for the best-of-S term (``npiseg_train.losses``).
Inference never imports this module's results: ``NPISeg3D.decode`` is the inference decode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from npiseg_ros.core import readout
from npiseg_ros.core.neural_process import label_means, object_samples
from npiseg_ros.core.scene import Scene, VoxelClicks

if TYPE_CHECKING:
    from npiseg_ros.core.model import DecoderPass, NPISeg3D

__all__ = ["TrainingOutput", "train_forward", "TARGET_POINTS_PER_LABEL"]

TARGET_POINTS_PER_LABEL = 50
"""Points sampled per label to build the training-only posterior (research code: 50)."""


@dataclass
class TrainingOutput:
    """What the training loss reads, for one scene with C = M + 1 labels.

    Attributes:
        logits: (V, C) logits decoded with latents from the POSTERIOR (deterministic models:
            their only logits).
        auxiliary_logits: (V, C) deterministic logits after each decoder layer but the last.
        kl_scene: scalar KL(q(z_s | targets) || p(z_s | clicks)); zero without a scene latent;
            None for deterministic models.
        kl_objects: scalar sum over labels of the z_o KL; zero without object latents; None
            for deterministic models.
        prior_path_logits: (V, C) logits with latents drawn from the PRIOR (what inference
            computes), or None (deterministic models).
        prior_sample_logits: (S, V, C) logits of each prior latent sample alone, or None.
        kl_object_terms: (C,) KL of each label's z_o (``kl_objects`` is their sum), so a KL
            floor can apply per latent group; None without object latents.
    """

    logits: Tensor
    auxiliary_logits: list[Tensor] = field(default_factory=list)
    kl_scene: Tensor | None = None
    kl_objects: Tensor | None = None
    prior_path_logits: Tensor | None = None
    prior_sample_logits: Tensor | None = None
    kl_object_terms: Tensor | None = None


def train_forward(model: "NPISeg3D", scene: Scene, clicks: VoxelClicks, targets: Tensor,
                  previous: Tensor | None = None, *, num_samples: int,
                  generator: torch.Generator | None = None,
                  scene_weight: float | None = None) -> TrainingOutput:
    """The training decode of one scene, with gradient.

    Args:
        scene: from ``NPISeg3D.embed_batch`` (with its voxel graph for prior models).
        clicks: the clicks' voxels and labels (objects 1..M all clicked).
        targets: (V,) int64 ground-truth labels in [0, M] (-1 = ignore).
        previous: (V,) int64 previous prediction in [0, M], or None.
        num_samples: Monte-Carlo samples S of the latents.
        generator: seeds the target points and the latent samples.
        scene_weight: alpha of Eq. 7; None uses the config value.
    """
    clicks.check(scene.num_voxels)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    state = model.attend(scene, clicks, previous, auxiliary=True)
    if model.modulator is None:
        logits = model.to_voxels(model.token_logits(state, state.points, state.queries), state)
        return TrainingOutput(logits, state.auxiliary_logits)
    return _probabilistic(model, state, targets, num_samples, generator,
                          model.config.scene_weight if scene_weight is None
                          else float(scene_weight))


def _probabilistic(model: "NPISeg3D", state: "DecoderPass", targets: Tensor, num_samples: int,
                   generator: torch.Generator | None, alpha: float) -> TrainingOutput:
    points, query_labels, segments = state.points, state.query_labels, state.segments
    num_classes = state.num_classes
    cell_of_voxel = state.cell_of_voxel
    cosine = model.config.mask_head == "cosine"
    embeddings = model.query_embeddings(state.queries)
    prior_prototypes = label_means(embeddings, query_labels, num_classes)
    target_rows, target_labels = _sample_targets(targets, num_classes, generator)
    token_rows = target_rows if cell_of_voxel is None else cell_of_voxel[target_rows]
    target_embeddings = model.query_embeddings(points[token_rows])
    kl_scene = kl_objects = points.new_zeros(())
    kl_object_terms = None

    scene_sample = None
    if model.scene_latent is not None:
        scene_prior = model.scene_latent(prior_prototypes)
        present = torch.bincount(target_labels, minlength=num_classes) > 0
        posterior_prototypes = torch.where(
            present.unsqueeze(1),
            label_means(target_embeddings, target_labels, num_classes), prior_prototypes)
        scene_posterior = model.scene_latent(posterior_prototypes)
        kl_scene = scene_posterior.kl_to(scene_prior)
        scene_sample = scene_posterior.sample(num_samples, generator)

    if model.object_latent is not None:
        object_prior = model.object_latent(
            scene_sample, model.object_context(embeddings, query_labels, num_classes), alpha)
        object_posterior = model.object_latent(
            scene_sample, model.object_context(target_embeddings, target_labels, num_classes),
            alpha)
        kl_object_terms = object_posterior.kl_to(object_prior).mean(dim=0)
        kl_objects = kl_object_terms.sum()
        latent = object_samples(object_posterior, scene_sample, num_samples, generator)
    else:
        latent = scene_sample.unsqueeze(1).expand(-1, num_classes, -1)

    # The inference path: latents from the prior networks (the scene sample from the scene
    # prior, the object latents from the object prior), with gradient, so the segmentation
    # loss trains what the node runs (the posterior gets its own loss).
    prior_latent = model.latent_samples(embeddings, query_labels, prior_prototypes, alpha,
                                        num_samples, generator)
    prior_modulated = model.modulate(prior_latent, embeddings, query_labels)
    prior_mean = readout.mean_similarity(points, prior_modulated, segments, cosine=cosine,
                                         cell_of_row=cell_of_voxel)
    prior_path_logits = model.combine(state.prior_logits, prior_mean)
    prior_sample_logits = _per_sample_logits(model, points, prior_modulated, state)

    mean = readout.mean_similarity(points, model.modulate(latent, embeddings, query_labels),
                                   segments, cosine=cosine, cell_of_row=cell_of_voxel)
    logits = model.combine(state.prior_logits, mean)
    return TrainingOutput(logits, state.auxiliary_logits, kl_scene, kl_objects,
                          prior_path_logits, prior_sample_logits, kl_object_terms)


def _per_sample_logits(model: "NPISeg3D", points: Tensor, modulated: Tensor,
                       state: "DecoderPass") -> Tensor:
    """(S, V, C) logits of each latent sample (training: crops of <= ~50k voxels, one GEMM)."""
    points, modulated = readout.normalised(points, modulated,
                                           model.config.mask_head == "cosine")
    per_label = readout.max_per_label_rows(torch.matmul(modulated, points.T),
                                           state.segments)                  # (S, C, n)
    if state.cells is not None:
        per_label = per_label[..., state.cells.of_voxel]
    return model.combine(state.prior_logits, per_label.transpose(1, 2))


def _sample_targets(targets: Tensor, num_classes: int,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Pick up to TARGET_POINTS_PER_LABEL random voxels of each label (ignoring -1)."""
    valid = torch.nonzero((targets >= 0) & (targets < num_classes)).flatten()
    labels = targets[valid]
    scores = torch.rand(valid.shape[0], generator=generator, device=targets.device)
    order = torch.argsort(labels.to(scores.dtype) * 2.0 + scores)
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels, minlength=num_classes)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(order.shape[0], device=targets.device) - starts[sorted_labels]
    keep = order[rank < TARGET_POINTS_PER_LABEL]
    return valid[keep], labels[keep]

"""RITM-style click sampling for training (paper appendix D.2, ``method-and-protocol.md``).

Per sample: pick 1..``max_objects`` target objects (an anchor and its nearest neighbours, as
the benchmark lists do), give each 1..``max_positive`` positive clicks (the first at the point
deepest inside it, where the evaluation's first click lands), add 0..``max_negative`` random
background clicks, then run 0..N rounds of the evaluation simulator's corrective clicks on the
model's own predictions WITHOUT gradient. The caller then does one forward with gradient.

Deviation: the reference samples 1-5 background clicks; we allow 0 as well, because the
evaluation's first round (IoU@1) has no background click at all and the model must handle it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from npiseg_ros.core.model import NPISeg3D
from npiseg_ros.core.scene import Scene, VoxelClicks
from npiseg_ros.core.voxelize import voxelize
from npiseg_ros.eval.simulator import SimulatedClick, initial_clicks
from npiseg_train.data import pick_anchor

CORRECTIVE_POLICIES = ("model", "prior")

NEGATIVE_NEAR_M = 1.5
"""Half of the background clicks fall within this distance of a target: clicks a user would
make to cut an object from what touches it, more informative than ones far away."""


SIMULATOR_GRID_M = 0.1
"""The simulator runs on one voxel per 10 cm cell: its cost grows with points x error groups
and dominated the training step at 5 cm; the largest error group and its deepest point barely
move on the coarser grid (the research code also simulates on voxels, not points)."""


def simulator_subset(xyz: np.ndarray, grid_m: float = SIMULATOR_GRID_M) -> np.ndarray:
    """Sorted indices of one representative voxel per ``grid_m`` cell."""
    return np.sort(voxelize(xyz, grid_m).representative)


def _simulated_initial(xyz: np.ndarray, targets: np.ndarray,
                       subset: np.ndarray) -> list[int]:
    """The evaluation's first click per object (deepest point), on the simulator grid."""
    clicks = {c.label: int(subset[c.point_index])
              for c in initial_clicks(xyz[subset], targets[subset])}
    out = []
    for label in range(1, int(targets.max()) + 1):
        # an object too small to survive the coarse grid still gets a click (its first voxel)
        out.append(clicks.get(label, int(np.flatnonzero(targets == label)[0])))
    return out


def largest_error_click(xyz: np.ndarray, gt: np.ndarray,
                        prediction: np.ndarray) -> SimulatedClick | None:
    """Same click as ``npiseg_ros.eval.simulator.next_click`` (tests check equality), faster
    when the prediction is noisy: one KD-tree over each error group's complement instead of
    the simulator's pruned search over every partition, whose Python-level cost grows with
    the square of the number of (gt, pred) groups -- dozens early in training.

    Tie rules are the simulator's: lowest point index inside a group, (gt, pred) order
    between groups of equal size.
    """
    wrong = gt != prediction
    if not np.any(wrong):
        return None
    pairs = np.unique(np.stack([gt[wrong], prediction[wrong]], axis=1), axis=0)
    best: SimulatedClick | None = None
    for gt_label, predicted in pairs.tolist():
        inside = (gt == gt_label) & (prediction == predicted)
        members = np.flatnonzero(inside)
        if inside.all():
            distance, index = np.inf, int(members[0])
        else:
            nearest, _ = cKDTree(xyz[~inside]).query(xyz[members], k=1)
            position = int(np.argmax(nearest))
            distance, index = float(nearest[position]), int(members[position])
        if best is None or distance > best.distance:
            best = SimulatedClick(index, int(gt_label), int(predicted), distance)
    return best


def _simulated_next(xyz: np.ndarray, targets: np.ndarray, prediction: np.ndarray,
                    subset: np.ndarray) -> SimulatedClick | None:
    click = largest_error_click(xyz[subset], targets[subset], prediction[subset])
    if click is None:
        return None
    return SimulatedClick(int(subset[click.point_index]), click.label, click.predicted_label,
                          click.distance)


@dataclass
class ClickSample:
    """Targets and clicks of one training sample (voxel level).

    Attributes:
        targets: (V,) int64 label per voxel: 0 = background, 1..M = target objects.
        click_voxels: (K,) int64 voxel index per click.
        click_labels: (K,) int64 label per click (0 = background).
        previous_labels: (V,) int64 prediction before the last corrective click, or None
            when no corrective round ran (the session's first prediction has none either).
        rounds: number of corrective rounds that ran.
    """

    targets: np.ndarray
    click_voxels: np.ndarray
    click_labels: np.ndarray
    previous_labels: np.ndarray | None = None
    rounds: int = 0

    @property
    def num_objects(self) -> int:
        return int(self.targets.max())


def choose_targets(labels: np.ndarray, xyz: np.ndarray, rng: np.random.Generator, *,
                   max_objects: int, min_voxels: int, things: tuple[int, ...] = (),
                   thing_fraction: float | None = None) -> np.ndarray | None:
    """(V,) labels 0..M: a random anchor instance plus its M-1 nearest instances (centroids).

    With ``thing_fraction`` set, the anchor is one of ``things`` with that probability (and
    another object otherwise), so a mix dominated by stuff pieces still trains things.
    Returns None when no instance has ``min_voxels`` voxels (the scene is skipped).
    """
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[counts >= min_voxels]
    if ids.size == 0:
        return None
    count = int(rng.integers(1, min(max_objects, ids.size) + 1))
    centroids = np.stack([xyz[labels == i].mean(axis=0) for i in ids])
    if thing_fraction is None:
        anchor = int(rng.integers(ids.size))  # the draw of earlier runs (exact resume)
    else:
        anchor = int(np.flatnonzero(ids == pick_anchor(ids, things, thing_fraction, rng))[0])
    order = np.argsort(np.linalg.norm(centroids - centroids[anchor], axis=1), kind="stable")
    chosen = ids[order[:count]]
    targets = np.zeros(labels.shape[0], np.int64)
    for label, instance in enumerate(rng.permutation(chosen), start=1):
        targets[labels == instance] = label
    if not np.any(targets == 0):
        return None  # no background left: the crop is one object; not a useful sample
    return targets


def random_clicks(xyz: np.ndarray, targets: np.ndarray, rng: np.random.Generator, *,
                  max_positive: int, max_negative: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial clicks: (voxels (K,), labels (K,)); every object gets >= 1 click."""
    voxels = _simulated_initial(xyz, targets, simulator_subset(xyz))
    labels = list(range(1, int(targets.max()) + 1))
    for label in range(1, int(targets.max()) + 1):
        members = np.flatnonzero(targets == label)
        extra = int(rng.integers(0, max_positive))
        voxels += rng.choice(members, size=extra).tolist()
        labels += [label] * extra
    background = np.flatnonzero(targets == 0)
    count = int(rng.integers(0, max_negative + 1))
    if count and background.size:
        distance, _ = cKDTree(xyz[targets > 0]).query(xyz[background], k=1)
        near = background[distance < NEGATIVE_NEAR_M]
        for _ in range(count):
            pool = near if near.size and rng.random() < 0.5 else background
            voxels.append(int(rng.choice(pool)))
            labels.append(0)
    return np.asarray(voxels, np.int64), np.asarray(labels, np.int64)


@torch.no_grad()
def prior_labels(model: NPISeg3D, scene: Scene, click_voxels: torch.Tensor,
                 click_labels: torch.Tensor) -> torch.Tensor:
    """(V,) int64 labels of the geodesic prior alone (the graph baseline's labelling under the
    model's learned radius): no decoder pass, a few milliseconds per round."""
    rows, _ = scene.click_distances(click_voxels.tolist())
    num_classes = int(click_labels.max()) + 1
    label_distances = model.prior.label_distances(rows.to(click_labels.device), click_labels,
                                                  num_classes)
    labels = label_distances.argmin(dim=1)
    labels[click_voxels] = click_labels
    return labels


@torch.no_grad()
def predict_labels(model: NPISeg3D, scene: Scene, click_voxels: torch.Tensor,
                   click_labels: torch.Tensor, previous: torch.Tensor | None,
                   generator: torch.Generator) -> torch.Tensor:
    """(V,) int64 prediction as the session makes it (clicked voxels keep their label)."""
    output = model.decode(scene, VoxelClicks(click_voxels, click_labels), previous,
                          num_samples=1, generator=generator)
    labels = output.logits.argmax(dim=1)
    labels[click_voxels] = click_labels
    return labels


def corrective_rounds(model: NPISeg3D, scene: Scene, xyz: np.ndarray,
                      sample: ClickSample, rounds: int,
                      generator: torch.Generator,
                      policy: str = "model") -> ClickSample:
    """Add up to ``rounds`` simulator clicks, each on the current (no-grad) errors.

    ``policy`` ``model``: errors of the model's own prediction (a decoder pass per round);
    ``prior`` (models with the geodesic prior only): errors of the prior alone, i.e. of region
    growing -- the errors the learned correction exists to fix -- at a few ms per round instead
    of a decoder pass, so a step affords the evaluation's long click sequences. The previous
    mask is then the prior's labelling too.
    The scene embedding is detached: these decodes only choose clicks and the previous mask.
    """
    if policy not in CORRECTIVE_POLICIES:
        raise ValueError(f"policy must be one of {CORRECTIVE_POLICIES}, got {policy!r}")
    if policy == "prior" and (model.prior is None or scene.graph is None):
        raise ValueError("the 'prior' corrective policy needs a model with the geodesic prior")
    device = scene.features.device
    detached = scene.detach()
    voxels = torch.from_numpy(sample.click_voxels).to(device)
    labels = torch.from_numpy(sample.click_labels).to(device)
    previous: torch.Tensor | None = None
    subset = simulator_subset(xyz) if rounds else np.zeros(0, np.int64)
    done = 0
    for _ in range(rounds):
        if policy == "prior":
            prediction = prior_labels(model, detached, voxels, labels)
        else:
            prediction = predict_labels(model, detached, voxels, labels, previous, generator)
        click = _simulated_next(xyz, sample.targets, prediction.cpu().numpy(), subset)
        if click is None:
            break
        previous = prediction
        voxels = torch.cat([voxels, voxels.new_tensor([click.point_index])])
        labels = torch.cat([labels, labels.new_tensor([click.label])])
        done += 1
    return ClickSample(sample.targets, voxels.cpu().numpy(), labels.cpu().numpy(),
                       None if previous is None else previous.cpu().numpy(), done)

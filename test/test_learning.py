"""A tiny NPISeg3D learns one synthetic scene: gradients reach backbone, decoder, latents, KL."""
import numpy as np
import torch

from npiseg_ros.core.build import build_model, tiny_config
from npiseg_ros.core.scene import VoxelClicks
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.voxelize import voxelize
from npiseg_train.losses import KLRamp, click_distance_weights, npiseg_loss
from scenes import floor_with_boxes

STEPS = 150


def _random_clicks(targets: torch.Tensor, num_labels: int, generator: torch.Generator):
    voxels, labels = [], []
    for label in range(num_labels):
        members = torch.nonzero(targets == label).flatten()
        count = int(torch.randint(1, 3, (1,), generator=generator))
        voxels.append(members[torch.randint(len(members), (count,), generator=generator)])
        labels.append(torch.full((count,), label))
    return torch.cat(voxels), torch.cat(labels)


def test_tiny_model_learns_a_scene_and_segments_it():
    torch.manual_seed(0)
    xyz, rgb, labels = floor_with_boxes(seed=0)
    voxels = voxelize(xyz, 0.05)
    features = torch.from_numpy(rgb[voxels.representative])
    coords = torch.from_numpy(voxels.coords)
    voxel_xyz = torch.from_numpy(xyz[voxels.representative])
    targets = torch.from_numpy(labels[voxels.representative])
    num_labels = int(targets.max()) + 1

    model = build_model(tiny_config())
    untrained = _object_ious(model, xyz, rgb, labels, num_labels)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    ramp = KLRamp(steps=STEPS)
    losses, kl_values = [], []
    for step in range(STEPS):
        click_voxels, click_labels = _random_clicks(targets, num_labels, generator)
        scene = model.embed(features, coords, voxel_xyz)
        output = model.train_forward(scene, VoxelClicks(click_voxels, click_labels), targets,
                                     num_samples=2, generator=generator)
        terms = npiseg_loss(output, targets, click_distance_weights(voxel_xyz,
                                                                    voxel_xyz[click_voxels]),
                            ramp(step))
        optimiser.zero_grad()
        terms.total.backward()
        if step == 0:
            without_grad = [n for n, p in model.named_parameters() if p.grad is None]
            assert without_grad == [], f"no gradient reaches {without_grad}"
        optimiser.step()
        losses.append(float(terms.total.detach()))
        kl_values.append(float(terms.kl_scene + terms.kl_objects))

    assert np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.2 * np.mean(losses[:10])
    assert max(kl_values) > 0.0
    for part in ("backbone", "decoder", "scene_latent", "object_latent", "modulator"):
        changed = [n for n, p in model.named_parameters()
                   if n.startswith(part) and not torch.equal(p.detach(), initial[n])]
        assert changed, f"no {part} parameter was updated"

    trained = _object_ious(model, xyz, rgb, labels, num_labels)
    # Learned vs untrained by a wide gap, not a threshold tuned to one CPU: training results
    # differ between CPU kernels (AVX2 / AVX-512 / AMX gave 0.83-0.9+ here for the weakest
    # object); an untrained model scores far below either.
    assert min(trained) > 0.7, f"per-object IoU after training {trained}"
    assert np.mean(trained) > np.mean(untrained) + 0.3, (trained, untrained)


def _object_ious(model, xyz, rgb, labels, num_labels) -> list[float]:
    """IoU of each object after one click at its centre, through the session."""
    session = SegmentationSession(model, num_samples=4, seed=0)
    session.set_cloud(xyz, colors=rgb)
    for object_id in range(1, num_labels):
        members = np.flatnonzero(labels == object_id)
        centre = xyz[members].mean(axis=0)
        session.add_click(point_index=int(members[np.argmin(((xyz[members] - centre) ** 2).sum(1))]),
                          object_id=object_id)
    prediction = session.predict()
    ious = []
    for object_id in range(1, num_labels):
        truth = labels == object_id
        predicted = prediction.labels == object_id
        ious.append(float((truth & predicted).sum() / (truth | predicted).sum()))
    model.train()
    return ious

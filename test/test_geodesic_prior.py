"""The geodesic prior: graph distances, a prior model that starts exactly at the graph
baseline, the inference path trained, and a prior model that fits a real training crop."""
from pathlib import Path

import numpy as np
import pytest
import torch

from npiseg_ros.core.build import build_model, preset_config
from npiseg_ros.core.geodesic import GraphConfig, build_voxel_graph, distance_limit
from npiseg_ros.core.scene import VoxelClicks
from npiseg_ros.core.session import SegmentationSession
from npiseg_ros.core.voxelize import voxelize
from npiseg_ros.eval.baselines import GraphDistanceSegmenter
from npiseg_train.losses import click_distance_weights, segmentation_loss
from scenes import floor_with_boxes

REAL_TRAIN = Path(__file__).resolve().parents[2] / "shared/data/real/lidar/train"


def test_graph_distances_follow_the_surface_not_the_air():
    # a U-shaped path: the ends are 1 m apart in space but 5 m apart along the points
    step = 0.05
    left = np.column_stack([np.zeros(41), np.arange(41) * step, np.zeros(41)])
    bottom = np.column_stack([np.arange(1, 20) * step, np.zeros(19), np.zeros(19)])
    right = np.column_stack([np.full(41, 1.0), np.arange(41) * step, np.zeros(41)])
    points = np.concatenate([left, bottom, right])
    graph = build_voxel_graph(points, None, GraphConfig(num_neighbours=2, normal_weight=0.0))
    top_left, top_right = 40, len(points) - 1
    distance = graph.distances([top_left])[0]
    assert distance[top_left] == 0.0
    assert distance[top_right] == pytest.approx(2.0 + 1.0 + 2.0, rel=1e-3)
    assert np.isinf(graph.distances([top_left], limit=1.0)[0][top_right])
    # the induced subgraph on the left leg alone no longer reaches the right leg's points
    sub = graph.subgraph(np.arange(41))
    assert sub.num_voxels == 41
    assert sub.distances([40])[0][0] == pytest.approx(2.0, rel=1e-3)
    assert distance_limit(1.5) >= 4 * 1.5


def test_ordered_rows_match_fresh_rows_through_growth_undo_and_change():
    from npiseg_ros.core.geodesic import ClickDistanceCache, VoxelGraph

    xyz, _, _ = floor_with_boxes(seed=2, num_boxes=2)
    graph = build_voxel_graph(xyz[voxelize(xyz, 0.05).representative])
    cache = ClickDistanceCache(graph, limit=2.0)
    fresh = ClickDistanceCache(VoxelGraph(graph.matrix, symmetric=True), limit=2.0)
    rng = np.random.default_rng(0)
    voxels = [int(v) for v in rng.choice(graph.num_voxels, size=12, replace=False)]
    searches = []
    real = graph.distances
    graph.distances = lambda sources, limit: searches.append(list(sources)) or real(sources,
                                                                                   limit)
    sequences = [voxels[:1], voxels[:2], voxels[:9], voxels[:8],  # clicks added, one undone
                 voxels[:7] + [voxels[10]],                       # undo, then a new click
                 voxels[:7] + [voxels[10], voxels[10]],           # the same voxel twice
                 [voxels[11]] + voxels[1:5],                      # a change at the start
                 [], voxels]                                      # everything cleared, all
    for sequence in sequences:
        rows = cache.ordered_rows(sequence)
        assert rows.shape == (len(sequence), graph.num_voxels)
        if sequence:
            np.testing.assert_array_equal(rows, fresh.rows(sequence))
    # each voxel was searched once, however often the sequences repeated it
    searched = [v for call in searches for v in call]
    assert sorted(searched) == sorted(set(searched)) == sorted(set(voxels))


def _prior_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(preset_config("prior"))


def test_untrained_prior_model_labels_exactly_like_the_graph_baseline():
    xyz, rgb, labels = floor_with_boxes(seed=3, num_boxes=3)
    session = SegmentationSession(_prior_model(), num_samples=3, seed=0)
    session.set_cloud(xyz, colors=rgb)
    baseline = GraphDistanceSegmenter(voxel_size=session.voxel_size)
    baseline.set_cloud(xyz, colors=rgb)
    rng = np.random.default_rng(0)
    agreement = []
    for object_id in (1, 2, 3, 0, 1, 0):
        index = int(rng.choice(np.flatnonzero(labels == object_id)))
        session.add_click(point_index=index, object_id=object_id)
        baseline.add_click(point_index=index, object_id=object_id)
        agreement.append(np.mean(session.predict().labels == baseline.predict().labels))
    # gate 0: the decoder's correction is off, labels are the prior's argmax = region growing
    # (float32 vs float64 distances may only flip exact ties)
    assert min(agreement) > 0.999, agreement


def test_prior_model_needs_a_scene_with_its_voxel_graph():
    model = _prior_model().eval()
    xyz, _, _ = floor_with_boxes(seed=0)
    voxels = voxelize(xyz, 0.05)
    scene = model.embed(torch.ones(voxels.num_voxels, 1), torch.from_numpy(voxels.coords),
                        torch.from_numpy(xyz[voxels.representative]))
    with pytest.raises(ValueError, match="voxel graph"):
        model.decode(scene, VoxelClicks(torch.tensor([0]), torch.tensor([1])))


def test_segmentation_loss_reaches_the_inference_path():
    """The decode with targets also returns the prior-latent (inference) logits; a loss on
    them alone trains the prior networks and the prior scalars, not only the posterior."""
    model = _prior_model().train()
    with torch.no_grad():  # an untrained gate is 0, which blocks the decoder's gradient
        model.prior.correction_gate.fill_(0.5)
    xyz, _, labels = floor_with_boxes(seed=1, num_boxes=2)
    voxels = voxelize(xyz, 0.05)
    voxel_xyz = xyz[voxels.representative]
    targets = torch.from_numpy(labels[voxels.representative])
    graph = build_voxel_graph(voxel_xyz, None, model.config.graph_config())
    clicks = torch.tensor([int(np.flatnonzero(targets.numpy() == o)[0]) for o in (1, 2, 0)])
    click_labels = torch.tensor([1, 2, 0])
    scene = model.embed(torch.ones(voxels.num_voxels, 1), torch.from_numpy(voxels.coords),
                        torch.from_numpy(voxel_xyz), graph)
    output = model.train_forward(scene, VoxelClicks(clicks, click_labels), targets,
                                 num_samples=2, generator=torch.Generator().manual_seed(0))
    assert output.prior_path_logits is not None
    weights = click_distance_weights(torch.from_numpy(voxel_xyz),
                                     torch.from_numpy(voxel_xyz)[clicks])
    segmentation_loss(output.prior_path_logits, targets, weights).backward()
    for name in ("prior.correction_gate", "prior.log_sharpness", "prior.log_radius"):
        assert float(model.get_parameter(name).grad.abs()) > 0, name
    reached = [n for n, p in model.named_parameters()
               if p.grad is not None and float(p.grad.abs().sum()) > 0]
    for part in ("scene_latent.", "object_latent.", "modulator.", "backbone.", "decoder."):
        assert any(n.startswith(part) for n in reached), f"no gradient reaches {part}"


@pytest.mark.skipif(not REAL_TRAIN.is_dir(), reason=f"real training scans not at {REAL_TRAIN}")
def test_prior_model_fits_real_training_crops(tmp_path):
    """The brief's check before any long run: the training loop drives the loss of a few real
    LiDAR crops (the train split) well down."""
    import dataclasses

    from npiseg_train.config import load_config
    from npiseg_train.trainer import Trainer

    config = load_config(Path(__file__).resolve().parents[1] / "config/train_prior.yaml")
    roots = (str(REAL_TRAIN),)
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, roots=roots, max_voxels=3000),
        clicks=dataclasses.replace(config.clicks, max_corrective_rounds=4),
        run=dataclasses.replace(config.run, threads=0, time_budget_min=0.0, max_steps=1000))
    torch.set_num_threads(2)
    trainer = Trainer(config, tmp_path, show_progress=False)
    batches = [trainer.prepare(step) for step in range(2)]
    generator = torch.Generator().manual_seed(0)
    first, last = [], []
    for step in range(32):
        loss, _ = trainer.loss_module(batches[step % 2], 0.001, 2, generator)
        trainer.optimiser.zero_grad()
        loss.backward()
        trainer.optimiser.step()
        (first if step < 4 else last if step >= 28 else []).append(float(loss.detach()))
    assert np.isfinite(first + last).all()
    assert np.mean(last) < 0.7 * np.mean(first), (first, last)
    assert abs(float(trainer.model.prior.correction_gate.detach())) > 0.01  # correction on


def test_closed_form_smallest_eigenvectors_agree_with_eigh_including_degenerate_ones():
    """The graph's normals: closed form where the smallest eigenvalue is separated, eigh where
    it is not (a line, an isotropic blob, a zero matrix); always eigh's vector up to sign."""
    from npiseg_ros.core.geodesic import smallest_eigenvectors

    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 11, 3)) * np.array([3.0, 1.0, 0.05])  # flattish patches
    rotations = np.linalg.qr(rng.normal(size=(500, 3, 3)))[0]
    points = points @ rotations
    local = points - points.mean(axis=1, keepdims=True)
    matrices = np.matmul(local.transpose(0, 2, 1), local)
    line = np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])  # rank 1: two zero eigenvalues
    matrices = np.concatenate([matrices, [line, np.eye(3), np.zeros((3, 3)),
                                          np.diag([1.0, 1.0, 1e-9])]])
    vectors = smallest_eigenvectors(matrices)
    reference = np.linalg.eigh(matrices)[1][:, :, 0]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(np.einsum("vi,vi->v", vectors, reference)), 1.0,
                               atol=1e-9)


def _coarse_model(stride: int, seed: int = 0):
    """The prior preset decoding on cells of stride^3 voxels (same parameters as stride 1)."""
    import dataclasses

    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(preset_config("prior"), decode_stride=stride))
    with torch.no_grad():  # a working correction, so the decoder's output matters
        model.prior.correction_gate.fill_(0.7)
    return model.eval()


def _embed(model, coords, voxel_xyz):
    """The scene of voxels ``coords`` at ``voxel_xyz`` with its voxel graph (as training)."""
    graph = build_voxel_graph(voxel_xyz, None, model.config.graph_config())
    return model.embed(torch.ones(len(coords), 1), torch.from_numpy(coords),
                       torch.from_numpy(voxel_xyz), graph)


def _decode_all(model, coords, voxel_xyz, clicks, click_labels, previous=None, **kwargs):
    scene = _embed(model, coords, voxel_xyz)
    with torch.no_grad():
        return scene, model.decode(scene, VoxelClicks(clicks, click_labels), previous,
                                   num_samples=3, generator=torch.Generator().manual_seed(0),
                                   **kwargs)


@pytest.mark.parametrize("uncertainty", ["entropy", "variance"])
def test_coarse_decoding_with_one_voxel_per_cell_equals_full_resolution(uncertainty):
    """Cells of 2^3 voxels over a cloud whose voxels all lie in different cells: the tokens
    are the voxels (in another order), so every output equals the full-resolution decode."""
    xyz, _, labels = floor_with_boxes(seed=2, num_boxes=2)
    voxels = voxelize(xyz, 0.05)
    keep = np.flatnonzero((voxels.coords % 2 == 0).all(axis=1))  # one voxel per 2^3 cell
    keep = np.random.default_rng(0).permutation(keep)  # cells come out in another order
    coords, voxel_xyz = voxels.coords[keep], xyz[voxels.representative][keep]
    voxel_labels = labels[voxels.representative][keep]
    clicks = torch.tensor([int(np.flatnonzero(voxel_labels == o)[0]) for o in (1, 2, 0)])
    click_labels = torch.tensor([1, 2, 0])
    previous = torch.from_numpy(np.minimum(voxel_labels, 2))
    fine_scene, fine = _decode_all(_coarse_model(1), coords, voxel_xyz, clicks, click_labels,
                                   previous, uncertainty=uncertainty)
    coarse_scene, coarse = _decode_all(_coarse_model(2), coords, voxel_xyz, clicks,
                                       click_labels, previous, uncertainty=uncertainty)
    assert fine_scene.cells is None and coarse_scene.cells.num_cells == len(coords)
    assert not torch.equal(coarse_scene.cells.of_voxel, torch.arange(len(coords)))  # reordered
    for name in ("logits", "probabilities", "uncertainty"):
        torch.testing.assert_close(getattr(coarse, name), getattr(fine, name),
                                   rtol=1e-4, atol=1e-5, msg=name)
    # the training decode too (its target points and latents drawn alike from one seed)
    targets = torch.from_numpy(voxel_labels)
    trained = [model.train_forward(scene, VoxelClicks(clicks, click_labels), targets, previous,
                                   num_samples=2, generator=torch.Generator().manual_seed(1))
               for model, scene in ((_coarse_model(2), coarse_scene),
                                    (_coarse_model(1), fine_scene))]
    assert len(trained[0].auxiliary_logits) == 1  # two decoder layers
    for name in ("logits", "prior_path_logits", "prior_sample_logits", "auxiliary_logits"):
        torch.testing.assert_close(getattr(trained[0], name), getattr(trained[1], name),
                                   rtol=1e-4, atol=1e-5, msg=name)


def test_cells_number_the_occupied_cells_in_coordinate_order():
    """The packed-key grouping equals the row-wise unique of floor(coords / stride), negative
    coordinates included: the same cells in the same (x, y, z) lexicographic order."""
    from npiseg_ros.core.cells import group_cells

    model = _coarse_model(4)
    coords = torch.from_numpy(np.random.default_rng(3).integers(-40, 40, size=(3000, 3)))
    coords = torch.unique(coords, dim=0)[torch.randperm(2000, generator=torch.Generator()
                                                       .manual_seed(0))]
    features = torch.randn(len(coords), 32, generator=torch.Generator().manual_seed(1))
    cells = group_cells(coords, features, coords.float() * 0.05, 4, model.position_codes)
    expected, of_voxel = torch.unique(torch.div(coords, 4, rounding_mode="floor"), dim=0,
                                      return_inverse=True)
    assert torch.equal(cells.of_voxel, of_voxel) and cells.num_cells == len(expected)
    assert torch.equal(cells.of_voxel[cells.first_voxel], torch.arange(len(expected)))


def test_coarse_decoding_reads_out_every_voxel_and_trains():
    """Several voxels per cell: labels for all V voxels from far fewer tokens, voxels of one
    cell differ through their own prior logits, and the training loss reaches the backbone."""
    model = _coarse_model(4)
    xyz, _, labels = floor_with_boxes(seed=1, num_boxes=2)
    voxels = voxelize(xyz, 0.05)
    voxel_xyz = xyz[voxels.representative]
    targets = torch.from_numpy(labels[voxels.representative])
    clicks = torch.tensor([int(np.flatnonzero(targets.numpy() == o)[0]) for o in (1, 2, 0)])
    click_labels = torch.tensor([1, 2, 0])
    scene, output = _decode_all(model, voxels.coords, voxel_xyz, clicks, click_labels)
    cells = scene.cells
    assert cells.num_cells < voxels.num_voxels / 4
    assert output.logits.shape == (voxels.num_voxels, 3)
    assert torch.isfinite(output.uncertainty).all()
    shared = cells.of_voxel == cells.of_voxel[clicks[0]]
    assert shared.sum() > 1 and output.logits[shared].std(dim=0).max() > 0
    model.train()
    scene = _embed(model, voxels.coords, voxel_xyz)
    output = model.train_forward(scene, VoxelClicks(clicks, click_labels), targets,
                                 num_samples=2, generator=torch.Generator().manual_seed(0))
    assert len(output.auxiliary_logits) == model.config.num_decoder_layers - 1
    weights = click_distance_weights(torch.from_numpy(voxel_xyz),
                                     torch.from_numpy(voxel_xyz)[clicks])
    loss = segmentation_loss(output.prior_path_logits, targets, weights)
    for logits in output.auxiliary_logits:
        assert logits.shape == (voxels.num_voxels, 3)
        loss = loss + segmentation_loss(logits, targets, weights)
    loss.backward()
    assert float(model.backbone.parameters().__next__().grad.abs().sum()) > 0


def test_session_reports_the_decoder_tokens_of_its_cloud():
    xyz, rgb, _ = floor_with_boxes(seed=1, num_boxes=2)
    fine, coarse = SegmentationSession(_coarse_model(1)), SegmentationSession(_coarse_model(4))
    assert fine.num_decode_tokens == coarse.num_decode_tokens == 0
    fine.set_cloud(xyz, colors=rgb)
    coarse.set_cloud(xyz, colors=rgb)
    assert fine.num_decode_tokens == fine.num_voxels == coarse.num_voxels
    assert 0 < coarse.num_decode_tokens < coarse.num_voxels / 4


def test_each_clicked_voxel_is_pooled_once_and_the_pooling_is_exact():
    """A coarse scene pools a clicked voxel's graph distances over the cells once and reuses
    them for later clicks (and after undo); each predict equals one whose scene pools every
    click afresh, and the pooled rows equal a naive per-cell minimum."""
    xyz, rgb, labels = floor_with_boxes(seed=1, num_boxes=2)
    cached, fresh = (SegmentationSession(_coarse_model(4), num_samples=3) for _ in range(2))
    for session in (cached, fresh):
        session.set_cloud(xyz, colors=rgb)
    cells = cached.scene.cells
    pooling = cells.min_pool
    pooled_rows = []
    cells.min_pool = lambda values, dim: pooled_rows.append(len(values)) or pooling(values, dim)
    points = [int(np.flatnonzero(labels == o)[k]) for o, k in ((1, 0), (2, 0), (0, 0), (1, 7))]
    for step, (point, object_id) in enumerate(zip(points, (1, 2, 0, 1))):
        outputs = []
        for session in (cached, fresh):
            session.add_click(point_index=point, object_id=object_id)
            if step == 2:  # undo and redo: the cached rows stay valid
                session.undo()
                session.predict()
                session.add_click(point_index=point, object_id=object_id)
            if session is fresh:
                fresh.scene.pooled.clear()
            outputs.append(session.predict())
        np.testing.assert_array_equal(outputs[0].labels, outputs[1].labels)
        np.testing.assert_array_equal(outputs[0].uncertainty, outputs[1].uncertainty)
    clicked = [int(v) for v in dict.fromkeys(cached.point_to_voxel[points])]
    assert sum(pooled_rows) == len(cached.scene.pooled) == len(clicked)
    rows, token_rows = cached.scene.click_distances(clicked)
    naive = torch.stack([rows[:, cells.of_voxel == cell].amin(dim=1)
                         for cell in range(cells.num_cells)], dim=1)
    assert torch.equal(token_rows, naive)


def test_the_distance_horizon_stops_every_click_search_in_session_and_training(tmp_path):
    import dataclasses

    from npiseg_ros.core.checkpoint import load_model, save_checkpoint
    from npiseg_ros.core.config import ModelConfig
    from npiseg_ros.core.errors import ConfigError

    default = _prior_model()
    radius = float(default.prior.log_radius.detach().exp())
    assert default.distance_limit() == distance_limit(radius) == max(30.0, 4 * radius)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(preset_config("prior"), distance_horizon_m=0.5))
    assert model.distance_limit() == distance_limit(radius, 0.5) == 0.5
    xyz, rgb, labels = floor_with_boxes(seed=1, num_boxes=2)
    session = SegmentationSession(model, num_samples=2)
    session.set_cloud(xyz, colors=rgb)
    click = session.add_click(point_index=int(np.flatnonzero(labels == 1)[0]), object_id=1)
    session.predict()
    scene = session.scene
    graph = scene.graph
    full = graph.distances([click.voxel_index])[0]
    voxels = scene.cloud.voxels  # the same voxels as a training scene (embed_batch's graphs)
    training = model.embed(torch.ones(voxels.num_voxels, 1), torch.from_numpy(voxels.coords),
                           torch.from_numpy(xyz[voxels.representative]), graph)
    for row in (scene.click_distances([click.voxel_index])[0][0].numpy(),  # the session's
                training.click_distances([click.voxel_index])[0][0].numpy()):  # training's
        near = full <= 0.5
        assert near.sum() > 10 and (~near & np.isfinite(full)).sum() > 10
        np.testing.assert_array_equal(row[near], full[near].astype(np.float32))
        assert np.isinf(row[~near]).all()
    # the horizon travels with the checkpoint; configs written before it existed mean 0
    path = tmp_path / "h.safetensors"
    save_checkpoint(path, model)
    assert load_model(path).distance_limit() == 0.5
    values = ModelConfig().to_dict()
    del values["distance_horizon_m"]
    assert ModelConfig.from_dict(values).distance_horizon_m == 0.0
    with pytest.raises(ConfigError, match="distance_horizon_m"):
        ModelConfig(distance_horizon_m=-1.0)

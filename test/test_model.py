"""NPISeg3D model: decoder validation, sampling statistics vs a naive reference, ablations."""
import numpy as np
import pytest
import torch

from npiseg_ros.core.build import build_model, tiny_config
from npiseg_ros.core.config import ModelConfig
from npiseg_ros.core.errors import ConfigError
from npiseg_ros.core.readout import (label_segments, max_per_label, mean_similarity,
                                     sample_statistics)
from npiseg_ros.core.scene import Scene, VoxelClicks
from npiseg_ros.core.voxelize import voxelize


def _scene(model, num_voxels=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    dim = model.config.hidden_dim
    return Scene(torch.randn(num_voxels, dim, generator=generator),
                 torch.randn(num_voxels, dim, generator=generator))


def _clicks(voxels, labels):
    return VoxelClicks(torch.as_tensor(voxels, dtype=torch.long),
                       torch.as_tensor(labels, dtype=torch.long))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


def test_sample_statistics_match_naive_per_sample_loop(model):
    torch.manual_seed(1)
    points = torch.randn(300, 32)
    modulated = torch.randn(7, 9, 32)  # S = 7 samples, Q = 9 queries
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3])
    segments = label_segments(labels, 4)
    with torch.no_grad():
        gain = model.gain(None)
        mean, unused, probabilities = sample_statistics(points, modulated, segments, cosine=True,
                                                        gain=gain, per_sample_softmax=True)
        same_mean, variance, _ = sample_statistics(points, modulated, segments, cosine=True,
                                                   gain=gain, per_sample_softmax=False)
    assert unused is None  # entropy uncertainty does not need the variance
    torch.testing.assert_close(same_mean, mean)
    cosine = torch.stack([torch.nn.functional.cosine_similarity(
        points[:, None, :], modulated[s][None], dim=-1) for s in range(7)])  # (S, V, Q)
    naive_mean_max = torch.stack([cosine.mean(0)[:, labels == c].amax(-1) for c in range(4)], -1)
    torch.testing.assert_close(mean, naive_mean_max, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(variance, cosine.var(0, unbiased=False), rtol=1e-4, atol=1e-6)
    naive_max = torch.stack([cosine[..., labels == c].amax(-1) for c in range(4)], -1)
    expected = (naive_max * model.scale().detach()).softmax(-1).mean(0)
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(max_per_label(cosine[0], segments), naive_max[0])


@pytest.mark.parametrize("voxels, labels, message", [
    ([1, 2], [1, 3], "contiguous"),
    ([1, 2], [1, -1], ">= 0"),
    ([1, 10**6], [1, 2], "voxel indices"),
    ([], [], "at least one click"),
])
def test_decode_rejects_bad_clicks(model, voxels, labels, message):
    with pytest.raises(ValueError, match=message):
        model.decode(_scene(model), _clicks(voxels, labels))


def test_previous_mask_is_uncapped_and_changes_the_output(model):
    scene = _scene(model)
    num_objects = 30
    clicks = _clicks(torch.arange(num_objects + 1) * 10, torch.arange(num_objects + 1))
    generator = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        plain = model.decode(scene, clicks, num_samples=3, generator=generator())
        previous = plain.logits.argmax(1)
        refined = model.decode(scene, clicks, previous, num_samples=3, generator=generator())
    assert plain.logits.shape == (400, num_objects + 1)
    assert not torch.allclose(plain.logits, refined.logits)


def test_uncertainty_modes_and_deterministic_ablation():
    torch.manual_seed(0)
    probabilistic = build_model(tiny_config()).eval()
    deterministic = build_model(tiny_config(use_scene_latent=False,
                                            use_object_latent=False)).eval()
    assert deterministic.scene_latent is None and deterministic.modulator is None
    scene = _scene(probabilistic)
    clicks = _clicks([3, 50, 90], [1, 2, 0])
    with torch.no_grad():
        variance = probabilistic.decode(scene, clicks, num_samples=5)
        entropy = probabilistic.decode(scene, clicks, num_samples=5, uncertainty="entropy")
        flat = deterministic.decode(scene, clicks)
    assert (variance.uncertainty > 0).any() and (variance.uncertainty >= 0).all()
    assert (entropy.uncertainty >= 0).all()
    assert entropy.uncertainty.max() <= np.log(3) + 1e-5
    torch.testing.assert_close(entropy.probabilities.sum(1), torch.ones(400))
    assert torch.equal(flat.uncertainty, torch.zeros(400))


def test_scene_only_and_object_only_ablations_decode():
    for flags in (dict(use_scene_latent=True, use_object_latent=False),
                  dict(use_scene_latent=False, use_object_latent=True)):
        model = build_model(tiny_config(**flags)).train()
        scene = _scene(model)
        targets = torch.randint(0, 3, (400,))
        output = model.train_forward(scene, _clicks([1, 2, 3], [1, 2, 0]), targets,
                                     num_samples=2)
        (output.logits.sum() + output.prior_path_logits.sum()).backward()
        assert output.logits.shape == output.prior_path_logits.shape == (400, 3)
        assert output.prior_sample_logits.shape == (2, 400, 3)
        # a KL for the latent the model has, zero for the one it lacks
        assert (float(output.kl_scene.detach()) > 0) == flags["use_scene_latent"]
        assert (output.kl_object_terms is not None) == flags["use_object_latent"]


def test_config_validation_and_round_trip():
    config = tiny_config(object_context="sum", mask_head="dot")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({"colour": 3})
    with pytest.raises(ConfigError, match="mask_head"):
        tiny_config(mask_head="l2")
    with pytest.raises(ConfigError, match="divisible"):
        tiny_config(num_heads=5)


def test_voxelize_inverse_map_and_first_point():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-1, 1, (2000, 3))
    voxels = voxelize(xyz, 0.2)
    grid = np.floor(xyz / 0.2).astype(np.int64)
    np.testing.assert_array_equal(voxels.coords[voxels.point_to_voxel], grid)
    assert len(np.unique(voxels.coords, axis=0)) == voxels.num_voxels
    for voxel in range(voxels.num_voxels):
        members = np.flatnonzero(voxels.point_to_voxel == voxel)
        assert voxels.representative[voxel] == members.min()
    with pytest.raises(ValueError, match="non-empty"):
        voxelize(np.zeros((0, 3)), 0.1)


def test_key_major_attention_equals_the_generic_path():
    """Scene->click attention (many queries, few keys) runs as block-diagonal GEMMs; it must give
    what the generic path gives (float64: the maths, not one CPU's rounding)."""
    from npiseg_ros.core.decoder import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(32, 4, 0.0).double().eval()
    points, clicks = torch.randn(600, 32).double(), torch.randn(7, 32).double()
    point_pos, click_pos = torch.randn(600, 32).double(), torch.randn(7, 32).double()
    fast = block(points, clicks, point_pos, click_pos)
    generic = block(points, clicks, point_pos, click_pos, torch.zeros(600, 7).double())
    torch.testing.assert_close(fast, generic, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("per_sample_softmax", [True, False])
def test_sample_statistics_in_small_blocks_match_naive_cell_readout(monkeypatch,
                                                                   per_sample_softmax):
    """Coarse read-out with blocks far smaller than the inputs (several GEMM and row blocks):
    every row takes its cell's per-label similarities on its own prior logits."""
    import dataclasses

    import npiseg_ros.core.readout as readout_module
    from npiseg_ros.core.build import preset_config

    monkeypatch.setattr(readout_module, "GEMM_CHUNK", 7)
    monkeypatch.setattr(readout_module, "GEMM_BLOCK", 16)
    monkeypatch.setattr(readout_module, "ROW_CHUNK", 5)
    torch.manual_seed(0)
    prior_model = build_model(dataclasses.replace(preset_config("prior"), decode_stride=2)).eval()
    with torch.no_grad():
        prior_model.prior.correction_gate.fill_(0.7)
    generator = torch.Generator().manual_seed(2)
    cells = torch.randn(40, 32, generator=generator)
    modulated = torch.randn(5, 6, 32, generator=generator)  # S = 5, Q = 6
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    segments = label_segments(labels, 3)
    cell_of_row = torch.randint(0, 40, (100,), generator=generator)
    prior_logits = torch.randn(100, 3, generator=generator) * 3
    with torch.no_grad():
        gain = prior_model.gain(prior_logits)
        mean, variance, probabilities = sample_statistics(
            cells, modulated, segments, cosine=True, gain=gain,
            per_sample_softmax=per_sample_softmax, prior_logits=prior_logits,
            cell_of_row=cell_of_row)
        # the training loss reads the mean alone: the same blocks, so the same bits
        assert torch.equal(mean_similarity(cells, modulated, segments, cosine=True,
                                           cell_of_row=cell_of_row), mean)
    cosine = torch.nn.functional.cosine_similarity(
        cells[None, :, None, :], modulated[:, None, :, :], dim=-1)        # (S, N, Q)
    per_label = torch.stack([cosine[..., labels == c].amax(-1) for c in range(3)], -1)
    mean_per_label = torch.stack([cosine.mean(0)[:, labels == c].amax(-1) for c in range(3)], -1)
    torch.testing.assert_close(mean, mean_per_label[cell_of_row], rtol=1e-5, atol=1e-5)
    if per_sample_softmax:
        expected = (prior_logits + gain * per_label[:, cell_of_row]).softmax(-1).mean(0)
        assert variance is None
    else:
        expected = (prior_logits + gain * mean_per_label[cell_of_row]).softmax(-1)
        torch.testing.assert_close(variance, cosine.var(0, unbiased=False)[cell_of_row],
                                   rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)


def test_calibration_temperature_changes_probabilities_never_labels():
    """softmax(logits / T): the same labels, flatter (T > 1) or sharper (T < 1) confidence;
    T = 1 is the network's own output bit for bit."""
    import dataclasses

    from npiseg_ros.core.build import build_model, tiny_config
    from npiseg_ros.core.errors import ConfigError
    from npiseg_ros.core.scene import PointCloud, VoxelClicks

    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(), geodesic_prior=True, input_mode="none")
    model = build_model(config).eval()
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 2, (800, 3)).astype(np.float32)
    scene = model.encode(PointCloud.from_arrays(xyz))
    clicks = VoxelClicks(torch.tensor([3, 40, 90]), torch.tensor([1, 2, 0]))

    def decode(temperature, latents="sample"):
        with torch.inference_mode():
            return model.decode(scene, clicks, num_samples=4, latents=latents,
                                generator=torch.Generator().manual_seed(1),
                                temperature=temperature)

    plain, same, hot = decode(None), decode(1.0), decode(3.0)
    assert torch.equal(plain.probabilities, same.probabilities)
    assert torch.equal(hot.logits.argmax(1), plain.logits.argmax(1))
    assert not torch.allclose(hot.probabilities, plain.probabilities)
    # one latent draw (at the mean): the predicted label's probability falls as T grows
    plain, flat, sharp = decode(None, "mean"), decode(3.0, "mean"), decode(0.5, "mean")
    for other in (flat, sharp):
        assert torch.equal(other.logits.argmax(1), plain.logits.argmax(1))
    top = plain.probabilities.max(1).values
    assert (flat.probabilities.max(1).values <= top + 1e-6).all()
    assert (sharp.probabilities.max(1).values >= top - 1e-6).all()
    assert flat.probabilities.max(1).values.mean() < top.mean()
    with pytest.raises(ConfigError, match="calibration_temperature"):
        dataclasses.replace(config, calibration_temperature=0.0)

"""The backbone's contract: shapes, row order, batch independence, presets, errors, determinism."""
from __future__ import annotations

import pytest
import torch

from npiseg_ros.core.backbone import BACKBONE_PRESETS, build_backbone
from npiseg_ros.core.sparse import available_backends


def scene(
    seed: int, batch: int = 0, count: int = 3000, extent: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random blob of unique voxels (coordinates reach negative values) with RGB features."""
    generator = torch.Generator().manual_seed(seed)
    xyz = torch.randint(-extent // 2, extent // 2, (count, 3), generator=generator)
    xyz = torch.unique(xyz, dim=0)
    xyz = xyz[torch.randperm(len(xyz), generator=generator)]
    coords = torch.cat([torch.full((len(xyz), 1), batch), xyz], dim=1).long()
    return torch.rand(len(xyz), 3, generator=generator), coords


def net(preset: str = "tiny", out_channels: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(preset, in_channels=3, out_channels=out_channels).double().eval()


def test_output_shape_and_dtype() -> None:
    features, coords = scene(0)
    out = net(out_channels=128)(features.double(), coords)
    assert out.shape == (len(coords), 128)
    assert out.dtype == torch.float64
    assert torch.isfinite(out).all()


def test_row_permutation_permutes_outputs() -> None:
    features, coords = scene(1)
    model = net()
    permutation = torch.randperm(len(coords), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out = model(features.double(), coords)
        permuted = model(features[permutation].double(), coords[permutation])
    torch.testing.assert_close(permuted, out[permutation], rtol=1e-10, atol=1e-10)


def test_scenes_in_one_batch_are_independent_in_eval_mode() -> None:
    features_a, coords_a = scene(2, batch=0)
    features_b, coords_b = scene(3, batch=1)
    # Overlapping coordinates in different batch slots must never see each other.
    model = net()
    with torch.no_grad():
        alone_a = model(features_a.double(), coords_a)
        alone_b = model(features_b.double(), coords_b)
        both = model(
            torch.cat([features_a, features_b]).double(), torch.cat([coords_a, coords_b])
        )
    torch.testing.assert_close(both[: len(coords_a)], alone_a, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(both[len(coords_a):], alone_b, rtol=1e-10, atol=1e-10)


def test_translation_by_even_multiple_of_16_is_exact() -> None:
    # All four stride-2 grids stay aligned when shifting by 16 voxels, so features are unchanged.
    features, coords = scene(4)
    shifted = coords.clone()
    shifted[:, 1:] += torch.tensor([16, -32, 48])
    model = net()
    with torch.no_grad():
        expected = model(features.double(), coords)
        torch.testing.assert_close(model(features.double(), shifted), expected)


def test_training_mode_backward_reaches_every_parameter() -> None:
    features, coords = scene(5)
    model = net().train()
    model(features.double(), coords).square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_forward_is_deterministic() -> None:
    features, coords = scene(6)
    with torch.no_grad():
        first = net(seed=1)(features.double(), coords)
        second = net(seed=1)(features.double(), coords)
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "preset,low,high",
    # 34C: 37.86 M for 3 -> 96 features + the 96 -> 128 head (12.4 k); matches the paper's 37.9 M.
    [("res16unet34c", 37.8e6, 38.0e6), ("small", 2.8e6, 3.0e6), ("tiny", 2e5, 6e5)],
)
def test_preset_parameter_counts(preset: str, low: float, high: float) -> None:
    model = build_backbone(preset, in_channels=3, out_channels=128)
    count = sum(parameter.numel() for parameter in model.parameters())
    assert low <= count <= high


def test_presets_are_listed() -> None:
    assert {"res16unet34c", "small", "tiny"} <= set(BACKBONE_PRESETS)


def test_unknown_preset_and_backend_list_valid_names() -> None:
    with pytest.raises(ValueError, match="tiny"):
        build_backbone("res50", 3, 8)
    with pytest.raises(ValueError, match="torch"):
        build_backbone("tiny", 3, 8, backend="minkowski")


def test_malformed_inputs_raise_value_error() -> None:
    features, coords = scene(7, count=200)
    model = net()
    bad_inputs = [
        (features.double(), coords.int()),  # wrong coordinate dtype
        (features.double(), coords[:, 1:]),  # no batch column
        (features.double()[:-1], coords),  # mismatched lengths
        (features.double()[:, :2], coords),  # wrong channel count
        (features.long(), coords),  # integer features
        (features.double()[None], coords),  # wrong rank
        (features.double()[:0], coords[:0]),  # empty
    ]
    for bad_features, bad_coords in bad_inputs:
        with pytest.raises(ValueError):
            model(bad_features, bad_coords)


@pytest.mark.skipif("spconv" not in available_backends(), reason="optional spconv not installed")
def test_spconv_backend_matches_torch() -> None:
    features, coords = scene(8, count=2000)
    coords = torch.cat([coords, scene(9, batch=1, count=1500)[1]])
    features = torch.rand(len(coords), 3, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    reference = build_backbone("tiny", 3, 8).eval()
    accelerated = build_backbone("tiny", 3, 8, backend="spconv").eval()
    accelerated.load_state_dict(reference.state_dict())
    with torch.no_grad():
        expected = reference(features, coords)
        out = accelerated(features, coords)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_autocast_forward_and_backward_run() -> None:
    # Mixed precision (as used on CUDA): the custom backward must cope with reduced-dtype grads.
    features, coords = scene(10, count=1500)
    torch.manual_seed(0)
    model = build_backbone("tiny", 3, 8).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(features, coords)
    out.float().square().mean().backward()
    assert model.stem.weight.grad is not None
    assert model.stem.weight.grad.dtype == torch.float32
    assert torch.isfinite(model.stem.weight.grad).all()


def test_huge_bounding_box_uses_sorted_keys_and_matches_grid_path() -> None:
    # A far-away second cluster in the same batch makes the box > 2^25 cells at every level, so
    # the sorted-key lookup runs; the near cluster's features must equal the grid-path result.
    features, coords = scene(11, count=1500)
    far_features, far_coords = scene(12, count=500)
    far_coords[:, 1:] += torch.tensor([2**20, -(2**20), 2**14])  # multiples of 16: same grids
    model = net()
    with torch.no_grad():
        alone = model(features.double(), coords)
        together = model(
            torch.cat([features, far_features]).double(), torch.cat([coords, far_coords])
        )
    torch.testing.assert_close(together[: len(coords)], alone, rtol=1e-10, atol=1e-10)

"""Property-based fuzzing (hypothesis) of everything that takes bytes from outside.

Every bad input must end in the module's typed error with a reason - never another exception, a
hang or a large allocation:

- ``PointCloud2`` -> numpy (``conversions.cloud_to_arrays``): random and malformed layouts
  (fields missing, repeated, overlapping, out of ``point_step``, count 0 or huge, every datatype
  and unknown ones, big-endian, wrong ``point_step``/``row_step``, truncated or padded data, 0
  points, 10^7 declared points over a few bytes) -> ``InvalidCloudError``; well-formed layouts of
  every kind decode to exactly the values packed in them, NaN/inf/1e30 coordinates dropped.
- clicks on a real session (NaN/inf/far positions, any object id, any point index) and click
  frames -> ``ClickRejectedError``.
- checkpoint files (truncated, bytes flipped, wrong or huge header length, random header JSON,
  hostile model configs, pickles) -> ``CheckpointError``.

Examples are bounded and derandomized (the same examples every run: no flaky CI); the
exploratory run over the real node is ``benchmarks/fuzz_node.py``.
"""
from __future__ import annotations

import json
import math
import pickle
import resource
import struct
import tracemalloc

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

try:
    from sensor_msgs.msg import PointCloud2, PointField
except ImportError:  # pragma: no cover - depends on the machine
    PointCloud2 = None

from npiseg_ros.core.errors import CheckpointError, ClickRejectedError, InvalidCloudError  # noqa

needs_ros = pytest.mark.skipif(PointCloud2 is None, reason="rclpy not installed (run "
                               "scripts/setup.sh)")


def fuzz(examples: int):
    """Bounded, derandomized (same examples every run), no example database on disk."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
NAMES = ["x", "y", "z", "rgb", "rgba", "r", "g", "b", "intensity", "ring", "t", ""]
DATATYPES = list(range(0, 10))          # 1..8 valid, 0 and 9 unknown
SPECIAL = [0.0, -0.0, 1.0, -2.5, math.nan, math.inf, -math.inf, 1e30, -1e30, 3.4e38, 1e-45,
           1e8, 1e8 + 1e4]
MEMORY_LIMIT = 64 * 2**20              # bytes any single conversion may allocate here
LOAD_LIMIT = 512 * 2**20               # loading the 1.7 MB tiny checkpoint (model + imports)


def _bounded_call(function, *args, limit: int = MEMORY_LIMIT, **kwargs):
    """Run ``function``; fail if it allocated more than ``limit`` bytes: numpy buffers through
    tracemalloc, everything else (torch) through the growth of the process's peak RSS."""
    peak_rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        return function(*args, **kwargs)
    finally:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_rss_before
        assert max(traced, grown) < limit, \
            f"{function.__name__} allocated {max(traced, grown) / 2**20:.0f} MB"


# ------------------------------------------------------------------ PointCloud2: malformed
@st.composite
def malformed_clouds(draw):
    fields = [PointField(name=draw(st.sampled_from(NAMES)),
                         offset=draw(st.one_of(st.integers(0, 40), st.sampled_from([2**32 - 1]))),
                         datatype=draw(st.sampled_from(DATATYPES)),
                         count=draw(st.one_of(st.integers(0, 4),
                                              st.sampled_from([2**20, 2**31, 2**32 - 1]))))
              for _ in range(draw(st.integers(0, 7)))]
    if draw(st.booleans()):  # usually give it x/y/z so the deeper checks are reached
        fields += [PointField(name=axis, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                   for i, axis in enumerate("xyz")]
    height = draw(st.one_of(st.integers(0, 4), st.sampled_from([2**32 - 1])))
    width = draw(st.one_of(st.integers(0, 40), st.sampled_from([10**7, 2**32 - 1])))
    point_step = draw(st.one_of(st.integers(0, 48), st.sampled_from([2**31, 2**32 - 1])))
    row_step = draw(st.one_of(
        st.just(width * point_step), st.integers(0, 2000),
        st.just(width * point_step + draw(st.integers(-3, 16)))))
    msg = PointCloud2(height=height, width=width, fields=fields,
                      is_bigendian=draw(st.booleans()), point_step=point_step,
                      row_step=max(0, min(row_step, 2**32 - 1)), is_dense=draw(st.booleans()))
    wanted = max(0, (min(height, 4) - 1) * min(row_step, 4000) + min(width, 40) * point_step)
    size = draw(st.one_of(st.just(min(wanted, 20000)), st.integers(0, 2048)))
    if draw(st.booleans()):
        values = draw(st.lists(st.sampled_from(SPECIAL), min_size=size // 4, max_size=size // 4))
        data = np.array(values, dtype=np.float32).tobytes()
    else:
        data = draw(st.binary(min_size=min(size, 512), max_size=min(size, 512)))
        data = (data * (size // max(len(data), 1) + 1))[:size]
    msg.data = data
    return msg


@needs_ros
@fuzz(400)
@given(msg=malformed_clouds(), limit=st.sampled_from([None, 0, 1000, 2_000_000]))
def test_any_pointcloud2_decodes_or_raises_invalid_cloud_error(msg, limit):
    from npiseg_ros.ros.conversions import MAX_ABS_COORDINATE, cloud_to_arrays
    try:
        cloud = _bounded_call(cloud_to_arrays, msg, max_points=limit)
    except InvalidCloudError as error:
        assert str(error)                     # a reason, never an empty message
        return
    assert cloud.xyz.shape == (msg.height * msg.width, 3) and cloud.xyz.dtype == np.float32
    finite = np.isfinite(cloud.xyz).all(axis=1)
    assert finite.any() and (np.abs(cloud.xyz[finite]) <= MAX_ABS_COORDINATE).all()
    if cloud.colors is not None:
        assert cloud.colors.shape == (cloud.num_points, 3)
        assert ((cloud.colors >= 0) & (cloud.colors <= 1)).all()
    if cloud.intensity is not None:
        assert cloud.intensity.shape == (cloud.num_points,)
        assert np.isfinite(cloud.intensity[finite]).all()      # no NaN into the network


@needs_ros
def test_huge_declared_clouds_are_refused_without_allocating():
    from npiseg_ros.ros.conversions import cloud_to_arrays
    fields = [PointField(name=a, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, a in enumerate("xyz")]
    for height, width, limit in ((1, 10**7, None), (1, 10**7, 2_000_000), (2**32 - 1, 2**32 - 1,
                                                                          None)):
        msg = PointCloud2(height=height, width=width, fields=fields, point_step=12,
                          row_step=12 * width % 2**32, is_bigendian=False)
        msg.data = b"\0" * 120
        with pytest.raises(InvalidCloudError, match="truncated|max_points|row_step"):
            _bounded_call(cloud_to_arrays, msg, max_points=limit)


# ------------------------------------------------------------------ PointCloud2: well formed
TYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
         PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
         PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"} if PointCloud2 else {}


@st.composite
def wellformed_clouds(draw):
    """A valid cloud of any layout and the values packed in it."""
    height, width = draw(st.integers(1, 3)), draw(st.integers(1, 12))
    n = height * width
    order = ">" if draw(st.booleans()) else "<"
    coord_type = draw(st.sampled_from([PointField.FLOAT32, PointField.FLOAT64,
                                       PointField.INT16, PointField.INT32, PointField.UINT8]))
    extras = draw(st.sets(st.sampled_from(["rgb", "intensity", "ring"])))
    names = ["x", "y", "z", *sorted(extras)]
    names = draw(st.permutations(names))
    types = {name: coord_type for name in "xyz"}
    types.update(rgb=PointField.UINT32, ring=PointField.UINT16,
                 intensity=draw(st.sampled_from([PointField.FLOAT32, PointField.UINT8])))
    counts = {name: draw(st.integers(1, 3)) for name in names}
    offsets, cursor = {}, 0
    for name in names:
        cursor += draw(st.integers(0, 3))                      # padding between fields
        offsets[name] = cursor
        cursor += np.dtype(TYPES[types[name]]).itemsize * counts[name]
    point_step = cursor + draw(st.integers(0, 8))
    row_step = width * point_step + draw(st.integers(0, 16))
    dtype = np.dtype({"names": names, "itemsize": point_step, "offsets": [offsets[n] for n in names],
                      "formats": [np.dtype((order + TYPES[types[n]], (counts[n],)))
                                  for n in names]})
    if coord_type in (PointField.FLOAT32, PointField.FLOAT64):
        coords = st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from(SPECIAL))
    else:
        info = np.iinfo(TYPES[coord_type])
        coords = st.integers(int(info.min), int(info.max))
    xyz = np.array(draw(st.lists(coords, min_size=3 * n, max_size=3 * n)),
                   dtype=np.float64).reshape(n, 3)
    points = np.zeros(n, dtype=dtype)
    for column, axis in enumerate("xyz"):
        points[axis][:, 0] = xyz[:, column]
    rgb = np.array(draw(st.lists(st.integers(0, 2**24 - 1), min_size=n, max_size=n)), np.uint32)
    if "rgb" in names:
        points["rgb"][:, 0] = rgb
    intensity = np.array(draw(st.lists(st.integers(0, 255), min_size=n, max_size=n)), np.float32)
    if "intensity" in names:
        points["intensity"][:, 0] = intensity
    rows = points.reshape(height, width).tobytes()
    data = b"".join(rows[r * width * point_step:(r + 1) * width * point_step]
                    + b"\xab" * (row_step - width * point_step) for r in range(height))
    msg = PointCloud2(height=height, width=width, point_step=point_step, row_step=row_step,
                      is_bigendian=order == ">", fields=[
                          PointField(name=n, offset=offsets[n], datatype=types[n],
                                     count=counts[n]) for n in names])
    msg.data = data
    return msg, xyz.astype(TYPES[coord_type]).astype(np.float32), rgb, intensity, extras


@needs_ros
@fuzz(300)
@given(case=wellformed_clouds())
def test_every_valid_layout_decodes_to_the_packed_values(case):
    from npiseg_ros.ros.conversions import MAX_ABS_COORDINATE, cloud_to_arrays, unpack_rgb
    msg, xyz, rgb, intensity, extras = case
    expected = xyz.copy()
    with np.errstate(invalid="ignore"):
        expected[np.abs(expected) > MAX_ABS_COORDINATE] = np.nan
    try:
        cloud = cloud_to_arrays(msg)
    except InvalidCloudError as error:
        assert not np.isfinite(expected).all(axis=1).any(), error   # only when no point is left
        return
    np.testing.assert_array_equal(cloud.xyz, expected)
    assert (cloud.height, cloud.width) == (msg.height, msg.width)
    if "rgb" in extras:
        np.testing.assert_array_equal(cloud.colors, unpack_rgb(rgb))
    if "intensity" in extras:
        np.testing.assert_array_equal(cloud.intensity, intensity)


# ------------------------------------------------------------------ clicks
@pytest.fixture(scope="module")
def session():
    import torch

    from npiseg_ros.core.build import build_model, tiny_config
    from npiseg_ros.core.session import SegmentationSession
    torch.manual_seed(0)
    session = SegmentationSession(build_model(tiny_config(input_mode="intensity")), device="cpu")
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-3, 3, (300, 3)).astype(np.float32)
    session.set_cloud(xyz, intensity=rng.uniform(0, 1, 300).astype(np.float32))
    return session


@fuzz(300)
@given(position=st.one_of(st.none(), st.tuples(*[st.one_of(
           st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(SPECIAL))] * 3)),
       object_id=st.one_of(st.integers(-2**40, 2**40), st.integers(-2, 70000)),
       point_index=st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.integers(-2, 400)))
def test_any_click_is_applied_or_rejected_with_a_reason(session, position, object_id,
                                                        point_index):
    if position is None and point_index is None:
        point_index = 0
    try:
        click = session.add_click(None if point_index is not None else position,
                                  object_id=object_id, point_index=point_index)
    except ClickRejectedError as error:
        assert str(error)
        return
    finally:
        session.reset()
    assert 0 <= click.point_index < 300 and 0 <= click.object_id <= 65535
    assert all(math.isfinite(v) for v in click.position)


@needs_ros
@fuzz(100)
@given(frame=st.text(max_size=40), target=st.sampled_from(["lidar", "map", ""]),
       x=st.floats(allow_nan=True, allow_infinity=True))
def test_click_in_any_frame_is_transformed_or_rejected(frame, target, x):
    from geometry_msgs.msg import PointStamped

    from npiseg_ros.ros.frames import ClickTransformer
    point = PointStamped()
    point.header.frame_id, point.point.x = frame, x
    transformer = ClickTransformer(node=None)
    transformer._tf2_missing = "tf2 not installed here"   # the PyPI wheels have no tf2
    try:
        result = transformer.to_frame(point, target, 0.0)
    except ClickRejectedError as error:
        assert frame in str(error)
        return
    assert frame in ("", target) and len(result) == 3


# ------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    import torch

    from npiseg_ros.core.build import build_model, tiny_config
    from npiseg_ros.core.checkpoint import save_checkpoint
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors",
                           build_model(tiny_config(input_mode="intensity")))
    return _Blob(path.read_bytes())


class _Blob(bytes):
    """Bytes with a short repr, so a failing example's report stays readable."""

    def __repr__(self) -> str:
        return f"<checkpoint, {len(self)} bytes>"


def _read(tmp_path, data: bytes):
    from npiseg_ros.core.checkpoint import read_checkpoint
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(data)
    return read_checkpoint(path)


@st.composite
def damaged(draw, original: bytes):
    kind = draw(st.sampled_from(["truncate", "flip", "header_length", "prefix", "random"]))
    if kind == "truncate":
        return original[:draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        data = bytearray(original)
        header_end = 8 + struct.unpack("<Q", original[:8])[0]
        for _ in range(draw(st.integers(1, 8))):
            index = draw(st.integers(0, header_end + 64))
            data[index] = draw(st.integers(0, 255))
        return bytes(data)
    if kind == "header_length":
        length = draw(st.one_of(st.integers(0, 2**64 - 1), st.sampled_from(
            [0, 1, 2**63, 2**64 - 1, 100_000_001, len(original)])))
        return struct.pack("<Q", length) + original[8:]
    if kind == "prefix":  # pickles, zip (torch.save), text
        return draw(st.sampled_from([b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04", b"{", b""])) \
            + draw(st.binary(max_size=64))
    return draw(st.binary(max_size=256))


@fuzz(250)
@given(data=st.data())
def test_damaged_checkpoint_files_raise_checkpoint_error(checkpoint_bytes, tmp_path, data):
    damaged_bytes = data.draw(damaged(checkpoint_bytes))
    try:
        config, tensors, _ = _bounded_call(_read, tmp_path, damaged_bytes)
    except CheckpointError as error:
        assert str(error)
        return
    assert tensors  # a flip inside tensor data or a header string can leave a valid file


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _with_header(original: bytes, change) -> bytes:
    length = struct.unpack("<Q", original[:8])[0]
    header = json.loads(original[8:8 + length])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + original[8 + length:]


@fuzz(40)
@given(key=st.sampled_from(["hidden_dim", "ffn_dim", "num_decoder_layers", "num_heads",
                            "num_background_queries", "fourier_features", "voxel_size",
                            "backbone", "use_scene_latent", "input_mode", "not_a_key"]),
       value=st.one_of(JSON, st.sampled_from([10**9, 2**62, -1, 0, 8193, 1.5, math.nan, True,
                                              "x" * 300])))
def test_hostile_model_configs_are_refused_before_building(checkpoint_bytes, tmp_path, key,
                                                           value):
    from npiseg_ros.core.checkpoint import load_model

    def change(header):
        config = json.loads(header["__metadata__"]["config"])
        config[key] = value
        header["__metadata__"]["config"] = json.dumps(config)
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(_with_header(checkpoint_bytes, change))
    try:
        model = _bounded_call(load_model, path, limit=LOAD_LIMIT)
    except CheckpointError as error:
        assert str(error)
        return
    assert model is not None   # a value that fits the weights (e.g. another voxel size)


@fuzz(60)
@given(config=JSON)
def test_any_config_json_is_refused_or_builds(checkpoint_bytes, tmp_path, config):
    def change(header):
        header["__metadata__"]["config"] = json.dumps(config)
    from npiseg_ros.core.config import ModelConfig
    try:
        config, _, _ = _read(tmp_path, _with_header(checkpoint_bytes, change))
    except CheckpointError as error:
        assert str(error)
        return
    assert isinstance(config, ModelConfig)   # e.g. {} (every default) is a valid config


def test_pickled_checkpoints_are_refused_without_unpickling(tmp_path):
    import torch

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the pickle was executed",))
    for protocol in (2, 4, 5):
        with pytest.raises(CheckpointError, match="pickle"):
            _read(tmp_path, pickle.dumps({"x": Boom()}, protocol=protocol))
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.pt")
    with pytest.raises(CheckpointError, match="pickle"):
        _read(tmp_path, (tmp_path / "torch.pt").read_bytes())

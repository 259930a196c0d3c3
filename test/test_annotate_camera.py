"""npiseg-annotate's camera overlay: projection and drawing checked against hand-computed
pixels, the page's colours, image decoding and the refusals (encodings, distortion models,
calibration), camera discovery and pairing in bags the tests write (rosbags: PointCloud2, Image
or CompressedImage + CameraInfo, /tf_static lidar -> camera_optical, /tf), and the HTTP
endpoints after a click on a box (shipped model), for a bag without cameras and for broken
cameras."""
from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from importlib.util import find_spec
from types import SimpleNamespace

import numpy as np
import pytest

from npiseg_ros.annotate.bag import write_cloud_bag
from npiseg_ros.annotate.camera import (CameraError, CameraRecording, LabelledSweep, decode_image,
                                        discover_cameras)
from npiseg_ros.annotate.projection import (Intrinsics, _ramp, draw_points, object_colour,
                                            point_colours, project_points)
from npiseg_ros.annotate.sources import open_source

K = np.array([[400.0, 0.0, 320.0], [0.0, 420.0, 240.0], [0.0, 0.0, 1.0]])
LIDAR_FROM_CAMERA = np.array([[0.0, 0.0, 1.0, 0.3],    # optical z (forward) = LiDAR x
                              [-1.0, 0.0, 0.0, 0.0],   # optical x (right) = LiDAR -y
                              [0.0, -1.0, 0.0, -0.2],  # optical y (down) = LiDAR -z
                              [0.0, 0.0, 0.0, 1.0]])
CAMERA_FROM_LIDAR = np.linalg.inv(LIDAR_FROM_CAMERA)
WIDTH, HEIGHT = 640, 480


def _intrinsics(distortion=(0, 0, 0, 0, 0)) -> Intrinsics:
    return Intrinsics(WIDTH, HEIGHT, K, np.asarray(distortion, np.float64))


# --------------------------------------------------------------------------- projection


def test_projection_puts_a_point_at_the_hand_computed_pixel_and_drops_the_rest():
    # (10.3, 1, 0.3) in the LiDAR frame is (-1, -0.5, 10) in the optical frame:
    # u = 400 * -1/10 + 320 = 280, v = 420 * -0.5/10 + 240 = 219
    xyz = np.array([[10.3, 1.0, 0.3],      # in view
                    [-5.0, 0.0, 0.0],      # behind the camera
                    [0.32, 0.0, -0.2],     # 2 cm in front of the lens: too near
                    [10.3, 20.0, 0.3],     # far left of the image
                    [np.nan, 0.0, 0.0]])   # not a point
    projection = project_points(xyz, CAMERA_FROM_LIDAR, _intrinsics())
    assert projection.index.tolist() == [0]
    assert np.allclose(projection.uv[0], [280.0, 219.0])
    assert np.isclose(projection.depth[0], 10.0)


def test_plumb_bob_distortion_by_hand_and_fold_back_guard():
    # normalised (-0.1, -0.05): r2 = 0.0125; k1 = 0.1 -> radial 1.00125; p1 = 0.01, p2 = 0.02:
    # xd = -0.100125 + 2 p1 x y + p2 (r2 + 2 x^2) = -0.100125 + 0.0001 + 0.00065 = -0.099375
    # yd = -0.0500625 + p1 (r2 + 2 y^2) + 2 p2 x y = -0.0500625 + 0.000175 + 0.0002 = -0.0496875
    xyz = np.array([[10.3, 1.0, 0.3]])
    projection = project_points(xyz, CAMERA_FROM_LIDAR, _intrinsics((0.1, 0, 0.01, 0.02, 0)))
    assert np.allclose(projection.uv[0], [400 * -0.099375 + 320, 420 * -0.0496875 + 240])
    # k1 = -0.5: r (1 - 0.5 r^2) stops growing at r^2 = 2/3; a point at r = 1 (45 degrees
    # off-axis) would land at 0.5, inside the image, though it is outside the lens's view
    beyond = np.array([[5.3, -5.0, -0.2]])  # optical (5, 0, 5): normalised (1, 0)
    for k1 in (-0.5, -0.1, 0.0):  # folds back / lands at u = 680 / at u = 720
        dropped = project_points(beyond, CAMERA_FROM_LIDAR, _intrinsics((k1, 0, 0, 0, 0)))
        assert dropped.index.size == 0
    inside = np.array([[5.3, -1.0, -0.2]])  # normalised (0.2, 0): r^2 0.04 < 2/3
    projection = project_points(inside, CAMERA_FROM_LIDAR, _intrinsics((-0.5, 0, 0, 0, 0)))
    assert np.allclose(projection.uv[0], [400 * 0.2 * (1 - 0.5 * 0.04) + 320, 240])


def test_rectified_images_use_p_and_r():
    info = _camera_info(projection_tx=-40.0)  # a right stereo camera: Tx = -fx * baseline
    intrinsics = Intrinsics.from_camera_info(info, rectified=True)
    projection = project_points(np.array([[10.3, 1.0, 0.3]]), CAMERA_FROM_LIDAR, intrinsics)
    # u = (fx X + Tx) / Z + cx = (400 * -1 - 40) / 10 + 320 = 276; distortion is not applied
    assert np.allclose(projection.uv[0], [276.0, 219.0])


def test_draw_points_nearest_wins_in_any_input_order_and_discs_have_their_radius():
    image = np.zeros((12, 12, 3), np.uint8)
    red, blue, green = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    uv = np.array([[5.0, 5.0], [5.2, 4.9], [9.0, 9.0]])
    depth = np.array([8.0, 2.0, 1.0])
    colours = np.array([blue, red, green], np.uint8)
    radii = np.array([2, 0, 1])
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        out = draw_points(image, uv[order], depth[order], colours[order], radii[order])
        assert tuple(out[5, 5]) == red            # the near point on top of the far one
        assert tuple(out[7, 5]) == blue           # 2 px below the far point: inside its disc
        assert tuple(out[7, 7]) == (0, 0, 0)      # sqrt(8) px away: outside it
        assert tuple(out[9, 9]) == green and tuple(out[9, 10]) == green
        assert tuple(out[10, 10]) == (0, 0, 0)
        assert (out > 0).any(axis=2).sum() == 13 + 5  # blue disc (red inside it), green plus
    assert not image.any()  # drawn on a copy


def test_point_colours_are_the_pages():
    # app.js objectColour(1) = hsl(137.508, 0.85, 0.55): chroma 0.765, m 0.1675,
    # x = 0.765 * (1 - |2.2918 % 2 - 1|) = 0.2232 -> (0.1675, 0.9325, 0.3907) * 255
    assert object_colour(1) == (43, 238, 100)
    assert object_colour(2) == (157, 43, 238)  # hue 275.016: (x + m, m, c + m)
    z = np.array([0.5, 0.5, 0.5, -10.0])
    rgb, radius = point_colours(z, np.array([1, 0, -1, 0]), None)
    assert rgb.tolist() == [[43, 238, 100], [125, 125, 125], [45, 45, 55], [70, 70, 70]]
    assert radius.tolist() == [2, 1, 1, 1]
    rgb, _ = point_colours(z, np.array([1, 0, -1, 0]),
                           np.array([0.0, 0.7, 0.3, np.nan]), "uncertainty")
    assert rgb.tolist()[:3] == [[20, 30, 110], [230, 40, 30], [45, 45, 55]]
    assert _ramp(np.array([0.5])).tolist() == [[120, 195, 120]]  # cyan-yellow midpoint
    assert point_colours(z, None, None)[0][0].tolist() == [125, 125, 125]


# --------------------------------------------------------------------------- images, calibration


def _image(encoding: str, pixels: np.ndarray, step: int | None = None):
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    step = step or rows.shape[1]
    padded = np.zeros((height, step), np.uint8)
    padded[:, :rows.shape[1]] = rows
    return SimpleNamespace(encoding=encoding, height=height, width=width, step=step,
                           data=padded.reshape(-1))


def test_decode_image_encodings_and_refusals():
    from npiseg_ros.annotate.camera import COMPRESSED_IMAGE, IMAGE

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(decode_image(_image("rgb8", rgb, step=12), IMAGE), rgb)  # row padding
    assert np.array_equal(decode_image(_image("bgr8", rgb[:, :, ::-1]), IMAGE), rgb)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 9, np.uint8)], axis=2)
    assert np.array_equal(decode_image(_image("rgba8", rgba), IMAGE), rgb)
    mono = rgb[:, :, 0]
    assert np.array_equal(decode_image(_image("mono8", mono), IMAGE),
                          np.repeat(mono[..., None], 3, 2))
    for encoding in ("yuv422", "16UC1"):
        with pytest.raises(CameraError, match=f"'{encoding}' is not supported"):
            decode_image(_image(encoding, np.zeros((2, 6), np.uint8)), IMAGE)
    short = _image("rgb8", rgb)
    short.data = short.data[:10]
    with pytest.raises(CameraError, match="needs 18 bytes, the message has 10"):
        decode_image(short, IMAGE)
    pytest.importorskip("PIL", reason="CompressedImage needs Pillow "
                        "(pip install 'npiseg_ros[annotate]')")
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    png = SimpleNamespace(format="png", data=np.frombuffer(buffer.getvalue(), np.uint8))
    assert np.array_equal(decode_image(png, COMPRESSED_IMAGE), rgb)
    with pytest.raises(CameraError, match="cannot decode the jpeg image"):
        decode_image(SimpleNamespace(format="jpeg", data=b"not a jpeg"), COMPRESSED_IMAGE)
    with pytest.raises(CameraError, match="compressed depth"):
        decode_image(SimpleNamespace(format="16UC1; compressedDepth", data=b""), COMPRESSED_IMAGE)


def _camera_info(model="plumb_bob", d=(0.0,) * 5, k=K, binning=0, projection_tx=0.0,
                 size=(WIDTH, HEIGHT)):
    p = np.concatenate([np.asarray(k, np.float64), [[projection_tx], [0.0], [0.0]]], axis=1)
    return SimpleNamespace(width=size[0], height=size[1], distortion_model=model, d=list(d),
                           k=np.asarray(k).reshape(-1), r=np.eye(3).reshape(-1),
                           p=p.reshape(-1), binning_x=binning, binning_y=binning,
                           roi=SimpleNamespace(width=0, height=0))


def test_camera_info_models_and_refusals():
    plumb = Intrinsics.from_camera_info(_camera_info(d=(0.1, 0.01, 0.001, 0.002, 0.0)), False)
    assert plumb.distortion.tolist() == [0.1, 0.01, 0.001, 0.002, 0.0]
    # a model named otherwise but without distortion is a plain pinhole camera
    pinhole = Intrinsics.from_camera_info(_camera_info("equidistant", (0, 0, 0, 0)), False)
    assert not pinhole.distortion.any()
    refusals = [(_camera_info("equidistant", (0.1, 0, 0, 0)), "distortion model 'equidistant'"),
                (_camera_info("rational_polynomial", (0.1,) * 8),
                 "'rational_polynomial' is not supported"),
                (_camera_info(d=(0.1,) * 8), "plumb_bob with 8 non-zero coefficients"),
                (_camera_info(k=np.zeros((3, 3))), "K is not a calibrated camera matrix"),
                (_camera_info(binning=2), "binning 2x2 is not supported")]
    for info, reason in refusals:
        with pytest.raises(CameraError, match=reason) as raised:
            Intrinsics.from_camera_info(info, False)
        assert "\n" not in str(raised.value)
    with pytest.raises(CameraError, match="the image is 320x240 but its CameraInfo says 640x480"):
        plumb.sized(320, 240)
    unsized = Intrinsics.from_camera_info(_camera_info(size=(0, 0)), False)
    assert unsized.sized(320, 240).width == 320


def test_cameras_are_paired_with_the_camera_info_of_their_namespace():
    topics = {"/cam/image_raw": "sensor_msgs/msg/Image",
              "/cam/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
              "/cam/camera_info": "sensor_msgs/msg/CameraInfo",
              "/stereo/left/image_rect_color": "sensor_msgs/msg/Image",
              "/stereo/left/camera_info": "sensor_msgs/msg/CameraInfo",
              "/stereo/right/camera_info": "sensor_msgs/msg/CameraInfo",
              "/side/image_raw": "sensor_msgs/msg/Image",
              "/points": "sensor_msgs/msg/PointCloud2"}
    found = {c.topic: c for c in discover_cameras(topics)}
    assert sorted(found) == ["/cam/image_raw", "/cam/image_raw/compressed", "/side/image_raw",
                             "/stereo/left/image_rect_color"]
    assert found["/cam/image_raw"].info_topic == "/cam/camera_info"
    assert found["/cam/image_raw/compressed"].info_topic == "/cam/camera_info"
    assert found["/stereo/left/image_rect_color"].info_topic == "/stereo/left/camera_info"
    assert found["/stereo/left/image_rect_color"].rectified
    assert not found["/cam/image_raw"].rectified and not found["/cam/image_raw"].problem
    assert found["/side/image_raw"].info_topic is None
    assert found["/side/image_raw"].problem == ("no sensor_msgs/msg/CameraInfo topic next to it "
                                                "(expected /side/camera_info)")


def test_quaternions_of_any_rotation_round_trip():
    from npiseg_ros.io.transforms import quaternion, transform_matrix

    rng = np.random.default_rng(3)
    rotations = [LIDAR_FROM_CAMERA[:3, :3], np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
                 np.diag([-1.0, -1.0, 1.0]), np.eye(3)]
    rotations += [np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(20)]
    for rotation in rotations:
        if np.linalg.det(rotation) < 0:
            rotation = -rotation
        x, y, z, w = quaternion(rotation)
        transform = SimpleNamespace(rotation=SimpleNamespace(x=x, y=y, z=z, w=w),
                                    translation=SimpleNamespace(x=0.0, y=0.0, z=0.0))
        assert np.allclose(transform_matrix(transform)[:3, :3], rotation)


# --------------------------------------------------------------------------- bags

PERIOD_NS = 100_000_000
needs_rosbags = pytest.mark.skipif(find_spec("rosbags") is None, reason="bag tests need rosbags "
                                   "(pip install 'npiseg_ros[annotate]')")


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A street sweep (LiDAR frame, metres): road at z -1.7, a box 4 x 1.8 x 1.5 m whose front
    face is 8 m ahead, a wall 25 m ahead; and the indices of the box's front face."""
    grid = lambda a, b, step: np.arange(a, b + 1e-9, step)  # noqa: E731
    gx, gy = np.meshgrid(grid(2, 30, 0.25), grid(-8, 8, 0.25))
    road = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, -1.7)], axis=1)
    wy, wz = np.meshgrid(grid(-10, 10, 0.2), grid(-1.7, 3, 0.2))
    wall = np.stack([np.full(wy.size, 25.0), wy.ravel(), wz.ravel()], axis=1)
    fy, fz = np.meshgrid(grid(-0.9, 0.9, 0.1), grid(-1.6, -0.2, 0.1))
    front = np.stack([np.full(fy.size, 8.0), fy.ravel(), fz.ravel()], axis=1)
    sx, sz = np.meshgrid(grid(8.1, 12, 0.1), grid(-1.6, -0.2, 0.1))
    sides = np.concatenate([np.stack([sx.ravel(), np.full(sx.size, s), sz.ravel()], axis=1)
                            for s in (-0.9, 0.9)])
    tx, ty = np.meshgrid(grid(8.1, 12, 0.1), grid(-0.8, 0.8, 0.1))
    top = np.stack([tx.ravel(), ty.ravel(), np.full(tx.size, -0.2)], axis=1)
    xyz = np.concatenate([front, sides, top, road, wall]).astype(np.float32)
    # the road under the box is hidden from the sensor
    hidden = (xyz[:, 2] == np.float32(-1.7)) & (xyz[:, 0] >= 8) & (xyz[:, 0] <= 12) \
        & (np.abs(xyz[:, 1]) <= 0.9)
    keep = ~hidden
    return xyz[keep], np.flatnonzero(keep[:len(front)])


def backdrop(frames: int = 3) -> list[np.ndarray]:
    """A camera image per frame: a colour gradient, so that drawn pixels stand out."""
    u, v = np.meshgrid(np.arange(WIDTH), np.arange(HEIGHT))
    base = np.stack([u * 200 // WIDTH, v * 200 // HEIGHT, np.full(u.shape, 60)], 2).astype(np.uint8)
    return [base.copy() for _ in range(frames)]


def camera_bag(path, frames: int = 3, *, broken: bool = False, storage: str = "sqlite3",
               **camera) -> tuple:
    """A bag of the scene with a camera (``camera``: CameraRecording fields); ``broken`` adds
    a yuv422 camera, one without CameraInfo and one whose images come 0.3 s late."""
    xyz, front = scene()
    poses = []
    for index in range(frames):  # the sensor drives forward; /tf odom <- velodyne
        pose = np.eye(4)
        pose[0, 3] = 0.5 * index
        poses.append(pose)
    cameras = [CameraRecording(backdrop(frames), K, **camera)]
    if broken:
        cameras += [
            CameraRecording([np.zeros((HEIGHT, WIDTH * 2), np.uint8)] * frames, K,
                            topic="/yuv/image_raw", encoding="yuv422"),
            CameraRecording(backdrop(frames), K, topic="/noinfo/image_raw", info_topic=None),
            CameraRecording(backdrop(frames), K, topic="/late/image_raw",
                            offset_ns=300_000_000)]
    bag = write_cloud_bag(path, [xyz] * frames, topic="/velodyne_points", poses=poses,
                          storage=storage, period_ns=PERIOD_NS, cameras=cameras,
                          static_transforms=[("velodyne", "camera_optical", LIDAR_FROM_CAMERA)])
    return bag, xyz, front


def _front_pixels(xyz: np.ndarray, front: np.ndarray) -> np.ndarray:
    """(M, 2) pixel (column, row) of the box's front-face points, by hand (pinhole)."""
    optical = xyz[front].astype(np.float64) @ CAMERA_FROM_LIDAR[:3, :3].T + CAMERA_FROM_LIDAR[:3, 3]
    uv = optical[:, :2] / optical[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return np.floor(uv + 0.5).astype(int)


@needs_rosbags
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_camera_pairs_the_nearest_image_and_draws_labels(tmp_path, storage):
    bag, xyz, front = camera_bag(tmp_path / "bag", offset_ns=30_000_000, storage=storage)
    source = open_source(bag)
    try:
        assert source.describe()["cameras"] == ["/camera/image_raw"]
        listing = source.cameras().describe()
        assert listing == [{"topic": "/camera/image_raw", "type": "sensor_msgs/msg/Image",
                            "info_topic": "/camera/camera_info", "rectified": False,
                            "width": WIDTH, "height": HEIGHT, "encoding": "rgb8",
                            "frame_id": "camera_optical", "usable": True, "problem": ""}]
        frame = source.frame(1)
        labels = np.zeros(len(xyz), np.int64)
        labels[front] = 3
        image, info = source.cameras().overlay(None, LabelledSweep(frame, labels, None))
        assert info == {"camera": "/camera/image_raw", "offset_s": 0.03,
                        "points": info["points"]} and info["points"] > len(front)
        pixels = _front_pixels(xyz, front)
        assert (image[pixels[:, 1], pixels[:, 0]] == object_colour(3)).all()
        # pixels no point reaches keep the camera's image
        untouched = backdrop(1)[0]
        assert (image[:5] == untouched[:5]).all()
    finally:
        source.close()


@needs_rosbags
def test_transform_through_tf_at_the_sweep_stamp(tmp_path):
    """camera <- LiDAR composed from /tf (odom <- velodyne, moving) and /tf_static."""
    bag, _, _ = camera_bag(tmp_path / "bag")
    source = open_source(bag)
    try:
        for index in (0, 2):
            frame = source.frame(index)
            assert np.allclose(frame.pose[0, 3], 0.5 * index)
            transform = source.cameras()._transform("camera_optical", frame.frame_id,
                                                   frame.stamp_ns)
            assert np.allclose(transform, CAMERA_FROM_LIDAR, atol=1e-9)
        assert source.tf.between("camera_optical", "nowhere", 0) is None
    finally:
        source.close()


@needs_rosbags
def test_compressed_png_camera(tmp_path):
    pytest.importorskip("PIL", reason="CompressedImage needs Pillow")
    bag, xyz, front = camera_bag(tmp_path / "bag", topic="/camera/image_raw/compressed",
                                 compressed="png")
    source = open_source(bag)
    try:
        [entry] = source.cameras().describe()
        assert entry["usable"] and entry["info_topic"] == "/camera/camera_info"
        assert entry["encoding"] == "png"
        labels = np.zeros(len(xyz), np.int64)
        labels[front] = 1
        image, _ = source.cameras().overlay(None, LabelledSweep(source.frame(0), labels, None))
        pixels = _front_pixels(xyz, front)
        assert (image[pixels[:, 1], pixels[:, 0]] == object_colour(1)).all()
    finally:
        source.close()


@needs_rosbags
def test_broken_cameras_give_one_line_reasons(tmp_path):
    bag, xyz, _ = camera_bag(tmp_path / "bag", broken=True)
    source = open_source(bag)
    try:
        cameras = source.cameras()
        listing = {entry["topic"]: entry for entry in cameras.describe()}
        assert listing["/camera/image_raw"]["usable"] and listing["/late/image_raw"]["usable"]
        assert listing["/yuv/image_raw"]["problem"] == ("image encoding 'yuv422' is not supported "
                                                        "(rgb8, bgr8, rgba8, bgra8, mono8)")
        assert listing["/noinfo/image_raw"]["problem"] == (
            "no sensor_msgs/msg/CameraInfo topic next to it (expected /noinfo/camera_info)")
        sweep = LabelledSweep(source.frame(0), None, None)
        reasons = {"/yuv/image_raw": "image encoding 'yuv422' is not supported",
                   "/noinfo/image_raw": "no sensor_msgs/msg/CameraInfo topic",
                   "/late/image_raw": r"no image on /late/image_raw within 0.1 s of sweep "
                                      r"000000_\d+ \(the nearest is \+0.300 s from it\)",
                   "/nope": "no camera topic '/nope'"}
        for topic, reason in reasons.items():
            with pytest.raises(CameraError, match=reason) as raised:
                cameras.overlay(topic, sweep)
            assert "\n" not in str(raised.value)
        # the default camera is the first usable one
        assert cameras.overlay(None, sweep)[1]["camera"] == "/camera/image_raw"
    finally:
        source.close()


@needs_rosbags
def test_no_transform_is_a_reason(tmp_path):
    xyz, _ = scene()
    bag = write_cloud_bag(tmp_path / "bag", [xyz], cameras=[CameraRecording(backdrop(1), K)])
    source = open_source(bag)  # no /tf, no /tf_static
    try:
        with pytest.raises(CameraError, match="the bag has no /tf or /tf_static: the transform "
                                              "from velodyne to camera_optical is unknown"):
            source.cameras().overlay(None, LabelledSweep(source.frame(0), None, None))
    finally:
        source.close()


# --------------------------------------------------------------------------- the HTTP API


@pytest.fixture(scope="module")
def session():
    from npiseg_ros.annotate.session import load_shipped_session
    from npiseg_ros.resources import shipped_checkpoint

    if not shipped_checkpoint():
        pytest.skip("no shipped checkpoint")
    return load_shipped_session(num_samples=4)[0]


class _Served:
    """A workspace on ``source`` served in this process on a free port."""

    def __init__(self, session, folder, bag) -> None:
        from npiseg_ros.annotate.server import AnnotateServer
        from npiseg_ros.annotate.workspace import Workspace

        self.workspace = Workspace(session, folder, open_source(bag), source_path=str(bag),
                                   log=lambda message: None)
        self.server = AnnotateServer(self.workspace, port=0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = self.server.url

    def get(self, path: str) -> tuple[int, dict, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=300) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.workspace.frames.source.close()


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


@needs_rosbags
def test_http_overlay_after_a_click_and_its_refusals(session, tmp_path):
    pytest.importorskip("PIL", reason="the overlay PNG needs Pillow")
    from annotate_helpers import post

    bag, xyz, front = camera_bag(tmp_path / "bag", broken=True)
    served = _Served(session, tmp_path / "session", bag)
    try:
        status, _, body = served.get("api/cameras")
        listing = json.loads(body)
        assert status == 200 and listing["reason"] == ""
        assert [c["topic"] for c in listing["cameras"] if c["usable"]] == [
            "/camera/image_raw", "/late/image_raw"]
        # before any click: every point in the background's grey
        status, headers, body = served.get("api/camera?frame=0")
        assert status == 200 and headers["Content-Type"] == "image/png"
        pixels = _front_pixels(xyz, front)
        before = _png(body)[pixels[:, 1], pixels[:, 0]]
        assert (before[:, 0] == before[:, 1]).all() and (before[:, 1] == before[:, 2]).all()

        centre = front[np.argmin(np.abs(xyz[front, 1]) + np.abs(xyz[front, 2] + 0.9))]
        status, state = post(served.url, "click", {"point_index": int(centre)})
        assert status == 200 and state["error"] == "" and len(state["clicks"]) == 1
        raw = served.get("api/labels")[2]
        labels = np.frombuffer(raw[:4 * len(xyz)], "<i4")
        uncertainty = np.frombuffer(raw[4 * len(xyz):], "<f4")
        object_id = int(labels[centre])
        assert object_id == state["active_object"] >= 1
        labelled = front[labels[front] == object_id]
        assert len(labelled) > len(front) // 2  # the model took most of the box's front

        status, headers, body = served.get("api/camera?camera=%2Fcamera%2Fimage_raw&frame=0"
                                           "&colour=labels")
        assert status == 200
        info = json.loads(headers["X-Npiseg-Camera"])
        assert info["camera"] == "/camera/image_raw" and info["frame_index"] == 0
        image = _png(body)
        at = _front_pixels(xyz, labelled)
        assert (image[at[:, 1], at[:, 0]] == object_colour(object_id)).all()
        rest = _front_pixels(xyz, front[labels[front] == 0])
        assert not (image[rest[:, 1], rest[:, 0]] == object_colour(object_id)).all(axis=1).any()

        status, _, body = served.get("api/camera?frame=0&colour=uncertainty")
        expected, _ = point_colours(xyz[:, 2], labels, uncertainty, "uncertainty")
        assert status == 200
        assert (_png(body)[at[:, 1], at[:, 0]] == expected[labelled]).all()

        refusals = [("api/camera?frame=1", 409, "frame 1 is not on screen (frame 0 is)"),
                    ("api/camera?colour=height", 400,
                     "'colour' must be one of labels, uncertainty"),
                    ("api/camera?frame=-1", 400, "'frame' must be a frame index"),
                    ("api/camera?frame=0&frame=0", 400, "'frame' must be given once"),
                    ("api/camera?zoom=2", 400, "unknown parameter 'zoom'"),
                    ("api/camera?camera=/nope", 404, "no camera topic '/nope'"),
                    ("api/camera?camera=/yuv/image_raw", 404,
                     "image encoding 'yuv422' is not supported"),
                    ("api/camera?camera=/noinfo/image_raw", 404,
                     "/noinfo/image_raw: no sensor_msgs/msg/CameraInfo topic next to it"),
                    ("api/camera?camera=/late/image_raw", 404,
                     "no image on /late/image_raw within 0.1 s")]
        for path, code, reason in refusals:
            status, headers, body = served.get(path)
            answer = json.loads(body)
            assert status == code and reason in answer["error"], (path, answer)
            assert "\n" not in answer["error"]
        assert post(served.url, "undo")[0] == 200  # the tool still works
    finally:
        served.close()


@needs_rosbags
def test_overlay_is_drawn_outside_the_workspace_lock(session, tmp_path, monkeypatch):
    """A click waits for the lock only while the labels are copied, never for the drawing."""
    from npiseg_ros.annotate.camera import BagCameras

    bag, _, _ = camera_bag(tmp_path / "bag", frames=1)
    served = _Served(session, tmp_path / "session", bag)
    taken = []
    draw = BagCameras.overlay

    def overlay(self, *args, **kwargs):
        def try_lock():
            free = served.workspace.lock.acquire(blocking=False)
            taken.append(free)
            if free:
                served.workspace.lock.release()
        probe = threading.Thread(target=try_lock)
        probe.start()
        probe.join()
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(BagCameras, "overlay", overlay)
    try:
        assert served.get("api/camera")[0] == 200
        assert taken == [True]
    finally:
        served.close()


@needs_rosbags
def test_sources_without_cameras_say_why(session, tmp_path):
    from annotate_helpers import post

    xyz, _ = scene()
    plain = write_cloud_bag(tmp_path / "plain", [xyz, xyz], topic="/velodyne_points")
    served = _Served(session, tmp_path / "session", plain)
    try:
        status, _, body = served.get("api/cameras")
        assert status == 200 and json.loads(body) == {
            "cameras": [], "reason": f"{plain} /velodyne_points: no sensor_msgs/msg/Image or "
                                     "sensor_msgs/msg/CompressedImage topic in the bag"}
        status, _, body = served.get("api/camera?frame=0")
        assert status == 404 and "no sensor_msgs/msg/Image" in json.loads(body)["error"]
        scan = tmp_path / "000000.bin"
        np.concatenate([xyz, np.zeros((len(xyz), 1), np.float32)], axis=1).tofile(scan)
        status, state = post(served.url, "open", {"path": str(scan)})
        assert status == 200 and state["ok"] and "cameras" not in state["source"]
        status, _, body = served.get("api/camera")
        assert status == 404 and json.loads(body)["error"] == (
            f"the input is not a rosbag2 bag (files: {scan}): camera images are read from bags "
            "only")
        assert json.loads(served.get("api/cameras")[2])["cameras"] == []
    finally:
        served.close()

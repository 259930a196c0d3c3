"""Indoor scene generation: build a furnished room, scan it with virtual RGB-D cameras, fuse.

Sensor model (per camera): ray-cast depth, axial noise σ(z) = 1.2 mm + 1.9 mm·(z − 0.4 m)²
(the shape reported for Kinect-type sensors), missing pixels at depth discontinuities and a
few random ones, a maximum depth; colour = base colour × Lambertian shading under a random
key light, per-camera exposure and white balance, per-point noise.
"""
from __future__ import annotations

import numpy as np

from npiseg_train.synth.indoor import Room, add_wall_items, build_shell, corner_block
from npiseg_train.synth.rooms import ROOM_TYPES, ROOM_WEIGHTS, furnish, room_size
from npiseg_train.synth.scene import Primitive, SynthScene, compact_labels, rotation_zyx
from npiseg_train.synth.sensors import PinholeCamera, SpinningLidar
from npiseg_train.synth.shapes import cast_grid, hit_normals, primitive_bounds


def _inside_any(point: np.ndarray, primitives: list[Primitive], margin: float) -> bool:
    for primitive in primitives:
        low, high = primitive.aabb()
        if np.all(point > low - margin) and np.all(point < high + margin):
            return True
    return False


def place_cameras(rng: np.random.Generator, size: np.ndarray, primitives: list[Primitive],
                  viewpoints: int, views: int, fov_x_deg: float,
                  width: int) -> list[PinholeCamera]:
    """Scan trajectory stand-in: a few viewpoints near distinct corners / wall middles at
    hand-held height, each turning through ``views`` headings that sweep across the room.

    Args:
        rng: random generator.
        size: (3,) room width, depth, height, metres.
        primitives: solids a camera must not sit in (the room shell excluded).
        viewpoints: number of camera positions.
        views: frames per position, each turned by about one field of view.
        fov_x_deg: horizontal field of view, degrees.
        width: image width in pixels (height = 3/4 of it).
    """
    anchors = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0], [1, 0.5], [0.5, 1], [0, 0.5]])
    order = rng.permutation(4).tolist() + (4 + rng.permutation(4)).tolist()
    cameras: list[PinholeCamera] = []
    placed = 0
    for anchor in anchors[order]:
        if placed == viewpoints:
            break
        for _ in range(10):
            inset = rng.uniform(0.25, 0.9, 2)
            shift = np.where(anchor < 0.25, inset,
                             np.where(anchor > 0.75, -inset, rng.uniform(-1, 1, 2)))
            xy = anchor * size[:2] + shift
            position = np.array([*np.clip(xy, 0.2, size[:2] - 0.2), rng.uniform(1.1, 1.9)])
            if not _inside_any(position, primitives, 0.15):
                break
        else:
            continue
        placed += 1
        toward = size[:2] * rng.uniform(0.35, 0.65, 2) - position[:2]
        heading = np.arctan2(toward[1], toward[0])
        step = np.radians(fov_x_deg) * rng.uniform(0.7, 0.95)
        for k in range(views):
            yaw = heading + (k - (views - 1) / 2) * step + rng.normal(0, 0.1)
            pitch = -rng.uniform(0.15, 0.6)
            direction = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch),
                                  np.sin(pitch)])
            cameras.append(PinholeCamera(position, PinholeCamera.look_at(
                position, position + direction), width, width * 3 // 4, fov_x_deg))
    return cameras


def _shade(rng: np.random.Generator, primitives: list[Primitive], owner: np.ndarray,
           points: np.ndarray, normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """(M, 3) RGB of hits: base colour, floor tile/plank pattern, diffuse shading."""
    base = np.array([p.color for p in primitives])[owner]
    # Plank or tile seams on floors make flat stuff less uniform (real floors rarely are).
    floor = points[:, 2] < 0.005
    if floor.any():
        period = rng.uniform(0.15, 0.6)
        seams = (np.abs(((points[floor, :2] / period) % 1.0) - 0.5) > 0.47).any(axis=1)
        base[floor] *= np.where(seams, 0.8, 1.0)[:, None]
    diffuse = np.clip(np.einsum("ij,j->i", normals, light), 0.0, 1.0)
    # Lamps and windows light a room unevenly: a smooth brightness field over space.
    wave = np.zeros(len(points))
    for _ in range(3):
        direction = rng.normal(0.0, 1.0, 3)
        direction *= 2 * np.pi / rng.uniform(1.5, 5.0) / np.linalg.norm(direction)
        wave += np.sin(points @ direction + rng.uniform(0, 2 * np.pi))
    field = 1.0 + rng.uniform(0.03, 0.1) * wave
    return base * ((0.6 + 0.5 * diffuse) * field)[:, None]


def furnished_room(rng: np.random.Generator, room_type: str | None = None) -> tuple[Room, int]:
    """Build a furnished room (no scanning).

    Returns:
        the room (its ``primitives`` and ``table.class_names`` describe the scene) and the
        number of leading primitives that form the shell (floor, walls, ceiling).
    """
    kind = room_type or str(rng.choice(ROOM_TYPES, p=ROOM_WEIGHTS))
    if kind not in ROOM_TYPES:
        raise ValueError(f"room_type must be one of {ROOM_TYPES}, got {kind!r}")
    room = Room(rng, *room_size(rng, kind))
    build_shell(room, with_ceiling=rng.random() < 0.6)
    shell_count = len(room.primitives)
    if kind != "bathroom" and rng.random() < 0.2:
        corner_block(room)
    add_wall_items(room)
    furnish(room, kind)
    return room, shell_count


def generate_indoor_scene(seed: int, name: str | None = None, room_type: str | None = None,
                          num_viewpoints: int | None = None, max_points: int = 200_000,
                          min_points: int = 50_000, max_depth: float = 5.0) -> SynthScene:
    """Generate one furnished room scanned by RGB-D frames from 2-4 viewpoints.

    Args:
        seed: every random choice derives from it (same seed, same scene).
        name: scene name (default ``"indoor_<seed>"``).
        room_type: one of ``ROOM_TYPES`` (default: drawn).
        num_viewpoints: scan positions (default: 2-4, drawn); each takes 2-3 pinhole
            frames or one partial panorama.
        max_points: the fused cloud is randomly thinned to at most this many points.
        min_points: voxel thinning stops short of leaving fewer points than this (when the
            raw scan has that many).
        max_depth: depth beyond which a camera returns nothing, metres.

    Returns:
        ``SynthScene`` in the room frame (corner at the origin, z up), RGB in [0, 1].
    """
    rng = np.random.default_rng(seed)
    room, shell_count = furnished_room(rng, room_type)
    size = room.size

    viewpoints = num_viewpoints or int(rng.integers(2, 5))
    sensors = _scan_sensors(rng, size, room.primitives[shell_count:], viewpoints, 320_000)
    # Fusing many frames averages depth noise down; raw single frames keep all of it.
    noise_scale = rng.uniform(0.3, 1.0)
    # Index -1 (no hit) reads the appended 0; glass and mirrors lose most returns.
    dropout = np.array([p.dropout for p in room.primitives] + [0.0])
    bounds = primitive_bounds(room.primitives)
    chunks: list[tuple[np.ndarray, ...]] = []
    for index, (sensor, visible) in enumerate(sensors):
        batch = sensor.windows(*bounds) if isinstance(sensor, SpinningLidar) else None
        hits = cast_grid(sensor.position, sensor.directions_cm, room.primitives, sensor.window,
                         rng, max_depth, windows=batch)
        keep = np.isfinite(hits.depth) & _edge_mask(rng, hits.depth) & visible
        keep &= rng.random(keep.shape) >= rng.uniform(0.0, 0.03) + dropout[hits.primitive]
        rows, cols = np.nonzero(keep)
        depth = hits.depth[rows, cols]
        # Depth noise grows with the distance along the optical axis (pinhole frames) or
        # along the ray (panoramas, whose 'axis' turns with the ray).
        axial = sensor.local_directions[rows, cols, 2] if isinstance(sensor, PinholeCamera) \
            else np.ones(len(rows))
        sigma = (0.0012 + 0.0019 * (depth * axial - 0.4) ** 2) * noise_scale
        noisy = depth + rng.normal(0.0, 1.0, depth.shape) * sigma / axial
        directions = sensor.directions[rows, cols]
        chunks.append((sensor.position + directions * noisy[:, None],
                       sensor.position + directions * depth[:, None],
                       hits.primitive[rows, cols], np.full(len(rows), index)))
    xyz, exact, owner, source = (np.concatenate(c) for c in zip(*chunks))
    if rng.random() < 0.85:
        # Fused reconstructions (TSDF meshes) have near-uniform density; raw fused frames
        # keep the sensor's density falloff. Training sees both. Small rooms get a finer
        # grid so no scan ends up with fewer than ~min_points points.
        cell = rng.uniform(0.012, 0.03)
        first = _first_per_voxel(xyz, cell)
        while len(first) < min_points and cell > 0.006:
            cell *= 0.7
            first = _first_per_voxel(xyz, cell)
        xyz, exact, owner, source = xyz[first], exact[first], owner[first], source[first]
    if len(xyz) > max_points:
        pick = np.sort(rng.choice(len(xyz), max_points, replace=False))
        xyz, exact, owner, source = xyz[pick], exact[pick], owner[pick], source[pick]
    # Colour only the points that survive: shading, lighting, exposure, then sensor noise.
    light = rng.normal(0, 0.4, 3) + np.array([0.0, 0.0, 1.0])
    light /= np.linalg.norm(light)
    normals = hit_normals(room.primitives, owner, exact)
    rgb = _shade(rng, room.primitives, owner, exact, normals, light)
    # Warm or cool light for the whole room, then each frame's exposure and white balance.
    warmth = rng.uniform(-0.08, 0.08)
    tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth])
    exposure = tint * rng.uniform(0.85, 1.15, (len(sensors), 1)) \
        * rng.uniform(0.95, 1.05, (len(sensors), 3))
    rgb = rgb * exposure[source] + rng.normal(0.0, rng.uniform(0.01, 0.035), rgb.shape)
    rgb = np.clip(rgb, 0.0, 1.0)
    instance = np.array([p.instance for p in room.primitives], dtype=np.int64)
    labels = instance[owner]
    labels, names = compact_labels(labels, room.table.class_names)
    return SynthScene(
        name=name or f"indoor_{seed:06d}", kind="indoor", xyz=xyz.astype(np.float32),
        colors=rgb.astype(np.float32), intensity=None, labels=labels, class_names=names,
        sensor_origins=np.array([c.position for c, _ in sensors], dtype=np.float32),
        bounds=np.stack([np.zeros(3), size]).astype(np.float32))


def _panorama_elevations(rng: np.random.Generator, rows: int) -> np.ndarray:
    """(rows,) elevations, degrees, highest first: dense between −50° and +10° where the
    walls and furniture are, sparser towards the ceiling and the floor under the sensor
    (uniform rows would pile most points up right below the tripod)."""
    fine = np.linspace(rng.uniform(25.0, 45.0), -89.0, 2000)
    weight = np.where((fine > -50.0) & (fine < 10.0), 1.0, 0.35)
    cdf = np.concatenate([[0.0], np.cumsum(weight[:-1])])
    return np.interp(np.linspace(0.0, cdf[-1], rows), cdf, fine)


def _scan_sensors(rng: np.random.Generator, size: np.ndarray, primitives: list[Primitive],
                  viewpoints: int,
                  rays: int) -> list[tuple[PinholeCamera | SpinningLidar, np.ndarray]]:
    """Sensors of one scan with a (rows, cols) mask of the rays each keeps.

    Either hand-held style pinhole frames (2-3 per viewpoint, patchy coverage) or, more
    often, one panorama per viewpoint covering a random 200-360° sector (tripod scanners and
    long hand-held sweeps see nearly everything in line of sight). About ``rays`` rays in
    all, whatever the number of viewpoints.
    """
    if rng.random() < 0.35:
        views = int(rng.integers(2, 4))
        width = int(np.sqrt(rays / (viewpoints * views) * 4 / 3))
        cameras = place_cameras(rng, size, primitives, viewpoints, views,
                                rng.uniform(60.0, 80.0), width)
        return [(c, np.ones(c.shape, dtype=bool)) for c in cameras]
    frames = place_cameras(rng, size, primitives, viewpoints, 1, 60.0, 8)
    rows = int(rng.integers(180, 230))
    cols = int(rays / max(len(frames), 1) / rows)
    out = []
    for frame in frames:
        pano = SpinningLidar(frame.position, rotation_zyx(rng.uniform(0, 2 * np.pi)),
                             _panorama_elevations(rng, rows), cols)
        sweep = int(cols * rng.uniform(200, 360) / 360)
        visible = np.zeros(pano.shape, dtype=bool)
        visible[:, :sweep] = True
        out.append((pano, visible))
    return out


def _first_per_voxel(xyz: np.ndarray, cell: float) -> np.ndarray:
    """Sorted (V,) indices of the first point in each occupied ``cell``-metre voxel."""
    cells = np.floor(xyz / cell).astype(np.int64)
    cells -= cells.min(axis=0)
    keys = (cells[:, 0] * (cells[:, 1].max() + 1) + cells[:, 1]) * (cells[:, 2].max() + 1) \
        + cells[:, 2]
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def _edge_mask(rng: np.random.Generator, depth: np.ndarray) -> np.ndarray:
    """(H, W) bool, False at most pixels that border a depth jump (sensors lose those)."""
    finite = np.where(np.isfinite(depth), depth, 100.0)
    jump = np.zeros(depth.shape, dtype=bool)
    dy = np.abs(np.diff(finite, axis=0)) > 0.04 + 0.03 * finite[1:]
    dx = np.abs(np.diff(finite, axis=1)) > 0.04 + 0.03 * finite[:, 1:]
    jump[1:] |= dy
    jump[:-1] |= dy
    jump[:, 1:] |= dx
    jump[:, :-1] |= dx
    return ~(jump & (rng.random(depth.shape) < 0.7))

"""PNG previews of generated scenes (top-down and side views) for judging realism by eye."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from npiseg_train.synth.scene import SynthScene


def instance_palette(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 3) float RGB: one random, fairly saturated colour per instance id in ``labels``."""
    ids, inverse = np.unique(labels, return_inverse=True)
    colors = np.random.default_rng(seed).uniform(0.15, 1.0, (ids.size, 3))
    return colors[inverse]


def save_preview(scene: SynthScene, path: str | Path, max_points: int = 60000,
                 reference: np.ndarray | None = None) -> Path:
    """Write a PNG with top-down and side views, coloured by instance and by appearance.

    Args:
        scene: the scene to draw.
        path: output PNG path.
        max_points: points drawn per panel (random subset, fixed seed).
        reference: optional (M, 3) real cloud drawn beside the synthetic one for comparison.

    Returns:
        the written path.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    pick = rng.permutation(scene.num_points)[:max_points]
    xyz = scene.xyz[pick]
    by_instance = instance_palette(scene.labels)[pick]
    if scene.colors is not None:
        appearance, title = scene.colors[pick], "RGB"
    else:
        gray = np.clip(scene.intensity[pick] / 0.6, 0, 1)
        appearance, title = np.stack([gray] * 3, axis=1) * 0.9, "intensity"
    fig, grid = plt.subplots(2, 2, figsize=(16, 16))
    axes = grid.ravel()
    span = 40.0 if scene.kind == "lidar" else None
    for ax, colors, label in ((axes[0], by_instance, "instances"), (axes[1], appearance, title)):
        order = np.argsort(xyz[:, 2])  # draw high points last so tops stay visible
        ax.scatter(xyz[order, 0], xyz[order, 1], c=colors[order], s=0.3, linewidths=0)
        ax.set_title(f"{scene.name} top-down, {label} ({scene.num_points} pts, "
                     f"{len(scene.class_names)} instances)")
        ax.set_aspect("equal")
        if span:
            ax.set_xlim(-span, span)
            ax.set_ylim(-span, span)
    _oblique(axes[2], xyz, by_instance, "oblique view, instances", scene.kind)
    if reference is None and scene.kind == "lidar":
        # Range image: one row per beam, as the sensor itself sees the scan.
        r = np.linalg.norm(xyz, axis=1)
        elevation = np.degrees(np.arcsin(xyz[:, 2] / np.maximum(r, 1e-6)))
        azimuth = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
        axes[3].scatter(azimuth, elevation, c=np.log(r), s=0.5, linewidths=0, cmap="turbo")
        axes[3].set_title("range image (azimuth vs elevation, colour = log range)")
        axes[3].set_xlabel("azimuth (deg)")
        axes[3].set_ylabel("elevation (deg)")
    elif reference is None:
        axes[3].imshow(camera_view(scene))
        axes[3].set_title("RGB splatted into a camera at the first scan position")
        axes[3].set_axis_off()
    else:
        ref = reference[rng.permutation(len(reference))[:max_points]]
        axes[3].scatter(ref[:, 0], ref[:, 1], c=ref[:, 2], s=0.3, linewidths=0, cmap="viridis",
                        vmin=-2.5, vmax=2.0)
        axes[3].set_title("real reference, coloured by z")
        axes[3].set_aspect("equal")
        if span:
            axes[3].set_xlim(-span, span)
            axes[3].set_ylim(-span, span)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _oblique(ax, xyz: np.ndarray, colors: np.ndarray, title: str, kind: str) -> None:
    """Orthographic view from above and behind (yaw 30°, elevation 35°), far points first."""
    center = np.zeros(3) if kind == "lidar" else np.median(xyz, axis=0)
    # LiDAR: the near street only; indoor: below the ceiling so the furniture shows.
    keep = np.linalg.norm(xyz[:, :2], axis=1) < 30.0 if kind == "lidar" else \
        xyz[:, 2] < np.percentile(xyz[:, 2], 99) - 0.3
    xyz, colors = xyz[keep], colors[keep]
    yaw, elevation = np.radians(30.0), np.radians(35.0)
    p = xyz - center
    right = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
    forward = np.array([np.cos(yaw) * np.cos(elevation), np.sin(yaw) * np.cos(elevation),
                        -np.sin(elevation)])
    up = np.cross(right, forward)
    depth = p @ forward
    order = np.argsort(-depth)
    ax.scatter((p @ right)[order], (p @ up)[order], c=colors[order], s=0.6, linewidths=0)
    ax.set_title(title)
    ax.set_aspect("equal")


def camera_view(scene: SynthScene, width: int = 640, height: int = 480,
                fov_x_deg: float = 75.0) -> np.ndarray:
    """(height, width, 3) float image of the scene's colours seen from its first sensor
    origin towards the centre of its bounds (nearest point wins each 2×2 splat; white = no
    point). Shows what a person holding the camera would see, holes and all."""
    origin = scene.sensor_origins[0].astype(np.float64)
    target = scene.bounds.mean(axis=0).astype(np.float64)
    target[2] = min(target[2], origin[2]) - 0.5
    forward = (target - origin) / np.linalg.norm(target - origin)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    local = (scene.xyz - origin) @ np.stack([right, down, forward], axis=1)
    ahead = local[:, 2] > 0.1
    local = local[ahead]
    colors = scene.colors[ahead] if scene.colors is not None else \
        np.repeat(np.clip(scene.intensity[ahead, None] / 0.6, 0, 1), 3, axis=1)
    focal = width / 2 / np.tan(np.radians(fov_x_deg) / 2)
    u = (local[:, 0] / local[:, 2] * focal + width / 2).astype(np.int64)
    v = (local[:, 1] / local[:, 2] * focal + height / 2).astype(np.int64)
    image = np.ones((height, width, 3))
    depth = np.full((height, width), np.inf)
    order = np.argsort(-local[:, 2])  # far first, so near points overwrite them
    for du in (0, 1):
        for dv in (0, 1):
            uu, vv = u[order] + du, v[order] + dv
            inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
            image[vv[inside], uu[inside]] = colors[order][inside]
            depth[vv[inside], uu[inside]] = local[order, 2][inside]
    return image

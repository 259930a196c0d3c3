"""Part builders for kitchen and bathroom fixtures and big wall-side items.

Same local frame as ``furniture``: origin on the floor at the footprint centre, x = width,
y = depth with the back at +y (against the wall), z up, metres. Basins and tubs are built
as open boxes (rim walls + bottom) so they are concave, as the real things are.
"""
from __future__ import annotations

import numpy as np

from npiseg_train.synth.furniture import METAL, WHITE, WOOD, Item, Top, _box, pick
from npiseg_train.synth.scene import CYLINDER, ELLIPSOID, Part, jitter_color


def _basin(cx: float, cy: float, z0: float, hx: float, hy: float, depth: float,
           color: np.ndarray, wall: float = 0.02) -> list[Part]:
    """Open-topped box: bottom at ``z0`` plus four rim walls ``depth`` high."""
    return [_box(cx, cy, z0, hx, hy, wall, color),
            _box(cx - hx + wall / 2, cy, z0, wall / 2, hy, depth, color),
            _box(cx + hx - wall / 2, cy, z0, wall / 2, hy, depth, color),
            _box(cx, cy - hy + wall / 2, z0, hx, wall / 2, depth, color),
            _box(cx, cy + hy - wall / 2, z0, hx, wall / 2, depth, color)]


def counter(rng: np.random.Generator, length: float) -> tuple[Item, Item | None]:
    """Kitchen counter run ``length`` metres long: base cabinets, worktop, optional sink.

    Returns:
        the counter and, when present, the sink (a separate instance sitting in it).
    """
    hy = rng.uniform(0.28, 0.33)
    height = rng.uniform(0.86, 0.94)
    body, top = pick(rng, WOOD + WHITE), pick(rng, WHITE + METAL + WOOD)
    parts = [_box(0, 0.01, 0.08, length / 2, hy - 0.03, height - 0.12, body),
             _box(0, 0.01, 0.0, length / 2 - 0.02, hy - 0.06, 0.08, jitter_color(rng, body, 0.1)),
             _box(0, 0, height - 0.04, length / 2, hy, 0.04, top)]
    doors = max(1, int(length / rng.uniform(0.4, 0.6)))
    front = jitter_color(rng, body, 0.04)
    for k in range(doors):
        cx = -length / 2 + (k + 0.5) * length / doors
        parts.append(_box(cx, -hy + 0.015, 0.1, length / doors / 2 - 0.006, 0.01, height - 0.16,
                          front))
        parts.append(_box(cx, -hy - 0.005, height - 0.2, 0.06, 0.01, 0.015, pick(rng, METAL)))
    item = Item(parts, (length / 2, hy), [Top(0, 0, height, length / 2 - 0.05, hy - 0.05)])
    if rng.random() < 0.6 and length > 1.0:
        sink_x = rng.uniform(-length / 2 + 0.4, length / 2 - 0.4)
        steel = pick(rng, METAL[:1] + METAL[2:3])
        sink = _basin(sink_x, -0.02, height - 0.18, 0.25, 0.2, 0.2, steel)
        sink.append(Part(CYLINDER, (sink_x, 0.22, height + 0.15), (0.015, 0.015, 0.15), steel))
        return item, Item(sink, (0.25, 0.2))
    return item, None


def wall_cabinet(rng: np.random.Generator, length: float) -> Item:
    """Row of hanging cabinets (no footprint on the floor: place with z > 0)."""
    hy, height = rng.uniform(0.15, 0.2), rng.uniform(0.5, 0.8)
    body = pick(rng, WOOD + WHITE)
    parts = [_box(0, 0, 0, length / 2, hy, height, body)]
    doors = max(1, int(length / rng.uniform(0.35, 0.55)))
    for k in range(doors):
        cx = -length / 2 + (k + 0.5) * length / doors
        parts.append(_box(cx, -hy - 0.008, 0.01, length / doors / 2 - 0.006, 0.008, height - 0.02,
                          jitter_color(rng, body, 0.04)))
    return Item(parts, (length / 2, hy))


def refrigerator(rng: np.random.Generator) -> Item:
    """Tall fridge with two doors and a handle."""
    hx, hy, height = rng.uniform(0.28, 0.45), rng.uniform(0.3, 0.38), rng.uniform(1.5, 2.0)
    color = pick(rng, WHITE + METAL)
    split = height * rng.uniform(0.55, 0.7)
    return Item([_box(0, 0.02, 0, hx, hy - 0.02, height, color),
                 _box(0, -hy + 0.01, 0.02, hx - 0.01, 0.015, split - 0.03,
                      jitter_color(rng, color, 0.02)),
                 _box(0, -hy + 0.01, split, hx - 0.01, 0.015, height - split - 0.02,
                      jitter_color(rng, color, 0.02)),
                 _box(hx - 0.08, -hy - 0.02, split - 0.5, 0.015, 0.02, 0.4, pick(rng, METAL))],
                (hx, hy), [Top(0, 0, height, hx - 0.05, hy - 0.05)])


def microwave(rng: np.random.Generator) -> Item:
    """Microwave / small appliance box with a dark door."""
    hx, hy, height = rng.uniform(0.2, 0.28), rng.uniform(0.15, 0.2), rng.uniform(0.25, 0.32)
    color = pick(rng, WHITE + METAL)
    return Item([_box(0, 0, 0, hx, hy, height, color),
                 _box(-0.05, -hy - 0.004, 0.03, hx - 0.1, 0.005, height - 0.06,
                      jitter_color(rng, (0.08, 0.08, 0.1), 0.02))], (hx, hy))


def toilet(rng: np.random.Generator) -> Item:
    """Toilet: pedestal, elliptic bowl with seat, cistern against the wall."""
    white = pick(rng, WHITE)
    bowl_z = rng.uniform(0.38, 0.43)
    return Item([_box(0, 0.0, 0, 0.12, 0.18, bowl_z - 0.1, white),
                 Part(CYLINDER, (0, -0.08, bowl_z - 0.06), (0.19, 0.25, 0.06), white),
                 Part(CYLINDER, (0, -0.08, bowl_z + 0.01), (0.19, 0.25, 0.012),
                      jitter_color(rng, white, 0.03)),
                 _box(0, 0.27, bowl_z, 0.2, 0.09, rng.uniform(0.3, 0.42), white)],
                (0.2, 0.36), [Top(0, 0.27, bowl_z + 0.36, 0.15, 0.06)])


def bathroom_sink(rng: np.random.Generator) -> Item:
    """Wash basin on a pedestal or a small vanity cabinet, with a tap."""
    white = pick(rng, WHITE)
    hx, hy, height = rng.uniform(0.25, 0.4), rng.uniform(0.2, 0.28), rng.uniform(0.8, 0.9)
    parts = _basin(0, 0, height - 0.15, hx, hy, 0.15, white, wall=0.04)
    if rng.random() < 0.5:
        leg = (height - 0.15) / 2
        parts.append(Part(CYLINDER, (0, 0.05, leg), (0.1, 0.1, leg), white))
    else:
        parts.append(_box(0, 0, 0, hx, hy, height - 0.15, pick(rng, WOOD + WHITE)))
    parts.append(Part(CYLINDER, (0, hy - 0.04, height + 0.08), (0.015, 0.015, 0.08),
                      pick(rng, METAL)))
    return Item(parts, (hx, hy))


def bathtub(rng: np.random.Generator) -> Item:
    """Bathtub: open box with thick rim walls."""
    hx, hy, height = rng.uniform(0.7, 0.9), rng.uniform(0.35, 0.4), rng.uniform(0.5, 0.6)
    return Item(_basin(0, 0, 0, hx, hy, height, pick(rng, WHITE), wall=0.07), (hx, hy))


def tv(rng: np.random.Generator) -> Item:
    """Flat TV on a small foot (stand it on a cabinet) — a big dark slab."""
    width, height = rng.uniform(0.45, 0.8), rng.uniform(0.28, 0.48)
    dark = jitter_color(rng, (0.06, 0.06, 0.07), 0.02)
    return Item([_box(0, 0, 0, 0.2, 0.1, 0.02, dark),
                 _box(0, 0.02, 0.02, 0.03, 0.02, 0.08, dark),
                 _box(0, 0.02, 0.08, width, 0.03, 2 * height, dark)], (width, 0.1))


def curtain(rng: np.random.Generator, width: float, height: float) -> Item:
    """Hanging curtain: a few overlapping folds (ellipsoid-section slabs) down to the floor."""
    color = pick(rng, WHITE + [(0.6, 0.5, 0.4), (0.35, 0.4, 0.55), (0.55, 0.25, 0.25)])
    folds = max(2, int(width / 0.15))
    parts = [Part(ELLIPSOID, (-width / 2 + (k + 0.5) * width / folds, -0.05, height / 2),
                  (width / folds * 0.75, 0.05, height / 2), jitter_color(rng, color, 0.02))
             for k in range(folds)]
    return Item(parts, (width / 2, 0.1))

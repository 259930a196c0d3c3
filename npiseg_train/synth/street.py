"""Part builders for street objects: vehicles, people, vegetation, poles, buildings, fences.

Each builder returns parts in the object's local frame: origin on the ground at the
footprint centre, x = length / forward, y = left, z up, metres. Reflectivities are LiDAR
surface reflectivities in [0, 1] (car paint and glass are dark for a 905 nm LiDAR,
retro-reflective signs and plates bright).
"""
from __future__ import annotations

import numpy as np

from npiseg_train.synth.scene import BOX, CYLINDER, ELLIPSOID, Part, rotation_zyx

GREY = np.full(3, 0.5)
AXLE_Y = rotation_zyx(roll=np.pi / 2)   # turns a cylinder's axis onto local y (wheels)
AXLE_X = rotation_zyx(pitch=np.pi / 2)  # turns a cylinder's axis onto local x


def _box(center: tuple, half: tuple, refl: float, rotation: np.ndarray | None = None,
         transmit: float = 0.0, penetration: float = 0.0) -> Part:
    return Part(BOX, center, half, GREY, rotation, refl, penetration, transmit)


def _cyl(center: tuple, half: tuple, refl: float, rotation: np.ndarray | None = None) -> Part:
    return Part(CYLINDER, center, half, GREY, rotation, refl)


def _slab(x0: float, z0: float, x1: float, z1: float, half_width: float, refl: float,
          transmit: float = 0.0) -> Part:
    """Thin slab in the x-z plane from (x0, z0) to (x1, z1): windscreens, sloped roofs."""
    length = float(np.hypot(x1 - x0, z1 - z0))
    pitch = float(np.arctan2(x1 - x0, z1 - z0))
    return _box(((x0 + x1) / 2, 0.0, (z0 + z1) / 2), (0.03, half_width, length / 2), refl,
                rotation_zyx(pitch=pitch), transmit)


def _wheels(rng: np.random.Generator, axles_x: list[float], half_width: float,
            radius: float) -> list[Part]:
    width = rng.uniform(0.09, 0.13)
    return [_cyl((x, side * (half_width - width * 0.8), radius), (radius, radius, width),
                 0.05, AXLE_Y) for x in axles_x for side in (-1, 1)]


def car(rng: np.random.Generator) -> tuple[list[Part], np.ndarray]:
    """Sedan / hatchback / SUV: lower body, glass cabin with sloped screens, roof, wheels.

    Returns:
        parts and the (2,) footprint half size (length/2, width/2), metres.
    """
    length, width = rng.uniform(3.6, 5.0), rng.uniform(1.6, 1.9)
    suv = rng.random() < 0.3
    height = rng.uniform(1.55, 1.85) if suv else rng.uniform(1.35, 1.55)
    clearance = rng.uniform(0.16, 0.28) if suv else rng.uniform(0.12, 0.2)
    belt = clearance + rng.uniform(0.5, 0.65)
    paint = rng.uniform(0.06, 0.35)
    hw = width / 2
    parts = [_box((0, 0, (clearance + belt) / 2), (length / 2, hw, (belt - clearance) / 2), paint)]
    front = length / 2 - rng.uniform(0.8, 1.3) * (0.7 if suv else 1.0)
    rear = -length / 2 + rng.uniform(0.15, 0.9) * (0.4 if suv else 1.0)
    screen_run = rng.uniform(0.5, 0.9)
    back_run = rng.uniform(0.1, 0.3) if suv else rng.uniform(0.3, 0.8)
    roof_front, roof_rear = front - screen_run, rear + back_run
    cabin_hw = hw * rng.uniform(0.86, 0.94)
    parts += [
        # Side windows: glass lets part of the beams through into the (empty) cabin.
        _box(((roof_front + roof_rear) / 2, 0, (belt + height) / 2),
             ((roof_front - roof_rear) / 2, cabin_hw, (height - belt) / 2), 0.05, transmit=0.5),
        _box(((roof_front + roof_rear) / 2, 0, height - 0.02),
             ((roof_front - roof_rear) / 2, cabin_hw, 0.03), paint),
        _slab(front, belt, roof_front, height, cabin_hw, 0.05, transmit=0.4),
        _slab(rear, belt, roof_rear, height, cabin_hw, 0.05, transmit=0.4),
        _box((-length / 2 - 0.005, 0, belt - 0.2), (0.01, 0.26, 0.06), 0.9),  # licence plate
        # Bumpers stand a little proud of the body at both ends; mirrors stick out sideways.
        _box((length / 2, 0, clearance + 0.15), (0.05, hw * 0.95, 0.12), paint * 0.7),
        _box((-length / 2, 0, clearance + 0.15), (0.05, hw * 0.95, 0.12), paint * 0.7),
        _box((front - 0.1, hw + 0.08, belt + 0.08), (0.08, 0.08, 0.06), paint),
        _box((front - 0.1, -hw - 0.08, belt + 0.08), (0.08, 0.08, 0.06), paint),
    ]
    if not suv and rng.random() < 0.7:
        # The bonnet slopes down towards the nose.
        parts.append(_slab(length / 2 - 0.05, belt - 0.15, front, belt + 0.02, hw * 0.97, paint))
    radius = rng.uniform(0.29, 0.36)
    axle = length / 2 - rng.uniform(0.7, 0.95)
    parts += _wheels(rng, [axle, -axle], hw, radius)
    return parts, np.array([length / 2, hw])


def van(rng: np.random.Generator) -> tuple[list[Part], np.ndarray]:
    """Box van / minibus: tall body set back behind a short bonnet, sloped windscreen."""
    length, width, height = rng.uniform(4.6, 6.2), rng.uniform(1.8, 2.1), rng.uniform(1.9, 2.7)
    clearance, paint = rng.uniform(0.18, 0.3), rng.uniform(0.1, 0.45)
    hw = width / 2
    bonnet = rng.uniform(0.4, 0.9)
    belt = clearance + rng.uniform(0.6, 0.8)
    body_front = length / 2 - bonnet
    parts = [
        _box((0, 0, (clearance + belt) / 2), (length / 2, hw, (belt - clearance) / 2), paint),
        _box(((body_front - 0.6 - length / 2) / 2, 0, (belt + height) / 2),
             ((body_front - 0.6 + length / 2) / 2, hw, (height - belt) / 2), paint),
        _slab(length / 2 - bonnet * 0.3, belt, body_front - 0.6, height, hw * 0.95, 0.05, 0.4),
    ]
    radius = rng.uniform(0.32, 0.4)
    axle = length / 2 - rng.uniform(0.8, 1.1)
    parts += _wheels(rng, [axle, -axle], hw, radius)
    return parts, np.array([length / 2, hw])


def truck(rng: np.random.Generator) -> tuple[list[Part], np.ndarray]:
    """Lorry: cab plus a separate, taller cargo box; three axles."""
    cab_len, cargo_len = rng.uniform(1.8, 2.5), rng.uniform(4.5, 9.0)
    width, gap = rng.uniform(2.3, 2.55), rng.uniform(0.2, 0.6)
    cab_h, cargo_h = rng.uniform(2.6, 3.3), rng.uniform(3.0, 3.9)
    length = cab_len + gap + cargo_len
    hw, clearance = width / 2, rng.uniform(0.4, 0.7)
    front = length / 2
    parts = [
        _box((front - cab_len / 2, 0, (clearance + cab_h) / 2),
             (cab_len / 2, hw, (cab_h - clearance) / 2), rng.uniform(0.1, 0.5)),
        _box((front - cab_len - gap - cargo_len / 2, 0, (clearance + 0.5 + cargo_h) / 2),
             (cargo_len / 2, hw, (cargo_h - clearance - 0.5) / 2), rng.uniform(0.2, 0.6)),
        _box((0, 0, clearance + 0.2), (length / 2 - 0.3, hw * 0.8, 0.2), 0.1),  # chassis
    ]
    radius = rng.uniform(0.45, 0.55)
    parts += _wheels(rng, [front - 1.2, -length / 2 + 1.5, -length / 2 + 2.8], hw, radius)
    return parts, np.array([length / 2, hw])


def pedestrian(rng: np.random.Generator, scale: float | None = None) -> list[Part]:
    """Standing or walking person: two legs, torso, arms, head (optionally a backpack)."""
    height = scale if scale is not None else rng.uniform(1.5, 1.95)
    cloth = rng.uniform(0.08, 0.5)
    leg = 0.47 * height
    stride = rng.uniform(-0.35, 0.35)
    torso_h, head_r = 0.3 * height, 0.065 * height
    parts = []
    for side, swing in ((-1, stride), (1, -stride)):
        pitch = swing * 0.6
        parts.append(Part(CYLINDER, (np.sin(pitch) * leg / 2, side * 0.09, leg / 2),
                          (0.07, 0.075, leg / 2), GREY, rotation_zyx(pitch=pitch), cloth))
        parts.append(Part(CYLINDER, (-np.sin(pitch) * 0.3, side * 0.23, leg + torso_h * 0.55),
                          (0.045, 0.045, 0.3), GREY, rotation_zyx(pitch=-pitch, roll=side * 0.1),
                          cloth))
    parts.append(Part(CYLINDER, (0, 0, leg + torso_h / 2), (0.12, 0.19, torso_h / 2), GREY,
                      None, cloth))
    parts.append(Part(ELLIPSOID, (0.01, 0, leg + torso_h + head_r * 1.3),
                      (head_r * 0.95, head_r * 0.85, head_r * 1.15), GREY, None, 0.2))
    if rng.random() < 0.3:
        parts.append(_box((-0.17, 0, leg + torso_h * 0.6), (0.08, 0.15, 0.2),
                          rng.uniform(0.1, 0.4)))
    return parts


def cyclist(rng: np.random.Generator) -> list[Part]:
    """Rider leaning over a bicycle (thin wheels and frame return few points, as in reality)."""
    wheel_r, base = rng.uniform(0.31, 0.36), rng.uniform(0.95, 1.1)
    parts = [_cyl((x, 0, wheel_r), (wheel_r, wheel_r, 0.02), 0.15, AXLE_Y)
             for x in (base / 2, -base / 2)]
    parts.append(_box((0, 0, wheel_r + 0.2), (base / 2 * 0.8, 0.02, 0.02), 0.3))
    parts.append(_box((base * 0.35, 0, wheel_r + 0.45), (0.03, 0.25, 0.015), 0.3))  # handlebar
    rider = pedestrian(rng, rng.uniform(1.55, 1.9))
    lean = rotation_zyx(pitch=rng.uniform(0.35, 0.7))
    saddle = np.array([-0.1, 0.0, wheel_r + 0.55])
    for part in rider:
        # Tilt the rider about the saddle; legs end up near the pedals.
        offset = np.asarray(part.center) - np.array([0.0, 0.0, 0.85])
        part.center = tuple(saddle + lean @ offset)
        part.rotation = lean @ (np.eye(3) if part.rotation is None else part.rotation)
        parts.append(part)
    return parts


def tree(rng: np.random.Generator) -> tuple[list[Part], float]:
    """Trunk plus one to three overlapping foliage ellipsoids that beams partly penetrate.

    Returns:
        parts and the crown radius (metres) for spacing.
    """
    trunk_h, trunk_r = rng.uniform(1.8, 5.0), rng.uniform(0.08, 0.35)
    crown = rng.uniform(1.2, 3.8)
    leaves = rng.uniform(0.25, 0.5)
    parts = [_cyl((0, 0, trunk_h / 2 + 0.5), (trunk_r, trunk_r, trunk_h / 2 + 0.5),
                  rng.uniform(0.2, 0.45))]
    for _ in range(int(rng.integers(1, 4))):
        radius = crown * rng.uniform(0.6, 1.0)
        center = (rng.normal(0, crown * 0.25), rng.normal(0, crown * 0.25),
                  trunk_h + radius * rng.uniform(0.6, 1.0))
        half = (radius, radius * rng.uniform(0.8, 1.1), radius * rng.uniform(0.7, 1.3))
        parts.append(Part(ELLIPSOID, center, half, GREY, None, leaves,
                          penetration=rng.uniform(0.15, 0.6), transmit=rng.uniform(0.0, 0.2)))
    return parts, crown


def bush(rng: np.random.Generator, length: float | None = None) -> list[Part]:
    """A bush (ellipsoid) or, when ``length`` is given, a clipped hedge (box) that long."""
    leaves = rng.uniform(0.2, 0.42)
    if length is not None:
        height, depth = rng.uniform(0.6, 2.2), rng.uniform(0.5, 1.4)
        return [Part(BOX, (0, 0, height / 2), (length / 2, depth / 2, height / 2), GREY, None,
                     leaves, penetration=rng.uniform(0.05, 0.25))]
    radius = rng.uniform(0.4, 1.5)
    return [Part(ELLIPSOID, (0, 0, radius * 0.5), (radius, radius * rng.uniform(0.7, 1.2),
                                                    radius * rng.uniform(0.5, 0.9)),
                 GREY, None, leaves, penetration=rng.uniform(0.1, 0.4))]


def pole(rng: np.random.Generator) -> tuple[list[Part], str]:
    """Street light, plain pole or traffic sign. Returns parts and the class name."""
    radius = rng.uniform(0.05, 0.15)
    height = rng.uniform(3.0, 9.0)
    metal = rng.uniform(0.15, 0.4)
    parts = [_cyl((0, 0, height / 2), (radius, radius, height / 2), metal)]
    kind = rng.random()
    if kind < 0.35:
        arm = rng.uniform(0.8, 2.5)
        parts.append(_box((0, arm / 2, height - 0.1), (0.06, arm / 2, 0.05), metal))
        parts.append(_box((0, arm, height - 0.2), (0.15, 0.3, 0.08), metal))
        return parts, "pole"
    if kind < 0.7:
        sign_z = rng.uniform(2.0, 3.0)
        parts = [_cyl((0, 0, sign_z / 2 + 0.2), (0.04, 0.04, sign_z / 2 + 0.2), metal)]
        size = rng.uniform(0.3, 0.45)
        if rng.random() < 0.5:
            parts.append(_box((0.05, 0, sign_z), (0.01, size, size), 0.9))
        else:
            parts.append(_cyl((0.05, 0, sign_z), (size, size, 0.01), 0.9, AXLE_X))
        return parts, "traffic_sign"
    return parts, "pole"


def building(rng: np.random.Generator, frontage: float,
             depth: float) -> tuple[list[Part], float]:
    """Block with optional pitched roof, balconies, a porch and a plinth; local y = frontage
    direction, the facade faces local −x. Returns parts and the height, metres."""
    height = rng.uniform(3.5, 20.0) if rng.random() < 0.6 else rng.uniform(3.5, 9.0)
    facade = rng.uniform(0.25, 0.65)
    parts = [_box((depth / 2, 0, height / 2), (depth / 2, frontage / 2, height / 2), facade)]
    if height < 12 and rng.random() < 0.5:
        rise = rng.uniform(1.5, 4.0)
        roof_refl = rng.uniform(0.1, 0.4)
        parts.append(_slab(-0.3, height, depth / 2, height + rise, frontage / 2 + 0.3, roof_refl))
        parts.append(_slab(depth + 0.3, height, depth / 2, height + rise, frontage / 2 + 0.3,
                           roof_refl))
    floors = int(height // 3.0)
    if floors >= 2 and rng.random() < 0.4:
        width = rng.uniform(2.0, 4.0)
        for level in range(1, floors):
            for y in np.arange(-frontage / 2 + width, frontage / 2 - width, width * 2.2):
                parts.append(_box((-0.6, y, level * 3.0), (0.6, width / 2, 0.08), facade))
    if rng.random() < 0.5:
        parts.append(_box((-0.05, 0, 0.4), (0.08, frontage / 2, 0.4), rng.uniform(0.2, 0.5)))
    if rng.random() < 0.75:
        # Window panes a little proud of the facade: dark, and most beams that meet them
        # come back from nowhere (specular glass), leaving the facade full of holes.
        pane_w, pane_h = rng.uniform(0.5, 0.9), rng.uniform(0.6, 0.8)
        pitch = rng.uniform(2 * pane_w + 0.6, 2 * pane_w + 2.5)
        loss = rng.uniform(0.4, 0.9)
        for level in range(min(floors + 1, 4)):
            z = level * 3.0 + rng.uniform(1.3, 1.6)
            if z + pane_h > height - 0.3:
                break
            for y in np.arange(-frontage / 2 + pitch / 2, frontage / 2 - pane_w, pitch):
                parts.append(Part(BOX, (-0.02, y, z), (0.03, pane_w, pane_h), GREY, None, 0.05,
                                  dropout=loss))
    if rng.random() < 0.4:
        porch_y = rng.uniform(-frontage / 3, frontage / 3)
        parts.append(_box((-0.8, porch_y, 0.25), (0.8, 1.2, 0.25), facade))
    return parts, height


def fence(rng: np.random.Generator, length: float) -> list[Part]:
    """Fence along local y: posts plus a panel that is either solid or see-through mesh."""
    height = rng.uniform(0.8, 2.0)
    refl = rng.uniform(0.15, 0.45)
    see_through = rng.uniform(0.3, 0.8) if rng.random() < 0.6 else 0.0
    parts = [_box((0, 0, height / 2), (0.03, length / 2, height / 2), refl,
                  transmit=see_through)]
    for y in np.arange(-length / 2, length / 2 + 1e-6, rng.uniform(2.0, 3.5)):
        parts.append(_cyl((0, y, height / 2 + 0.05), (0.05, 0.05, height / 2 + 0.05), refl))
    return parts


def street_furniture(rng: np.random.Generator) -> tuple[list[Part], str]:
    """A bench or a wheelie bin. Returns parts and the class name."""
    if rng.random() < 0.5:
        length = rng.uniform(1.2, 2.0)
        refl = rng.uniform(0.2, 0.5)
        return [_box((0, 0, 0.45), (0.22, length / 2, 0.03), refl),
                _box((-0.22, 0, 0.7), (0.03, length / 2, 0.22), refl),
                _box((0, -length / 2 + 0.1, 0.22), (0.2, 0.03, 0.22), refl),
                _box((0, length / 2 - 0.1, 0.22), (0.2, 0.03, 0.22), refl)], "bench"
    size = rng.uniform(0.25, 0.4)
    height = rng.uniform(0.9, 1.2)
    return [_box((0, 0, height / 2), (size, size, height / 2), rng.uniform(0.1, 0.5))], "trash_can"

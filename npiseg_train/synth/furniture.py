"""Part builders for indoor furniture and clutter.

Local frame of every item: origin on the floor at the footprint centre, x = width,
y = depth with the back at +y (the side that goes against a wall), z up, metres.
Each builder returns an ``Item``: its parts, footprint half size, and the flat tops other
things can stand on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npiseg_train.synth.scene import BOX, CYLINDER, ELLIPSOID, Part, jitter_color, rotation_zyx

WOOD = [(0.55, 0.38, 0.22), (0.7, 0.55, 0.38), (0.4, 0.26, 0.15), (0.82, 0.7, 0.52),
        (0.3, 0.2, 0.12), (0.9, 0.88, 0.84)]
FABRIC = [(0.3, 0.35, 0.5), (0.55, 0.2, 0.2), (0.35, 0.45, 0.3), (0.6, 0.6, 0.58),
          (0.2, 0.2, 0.22), (0.7, 0.62, 0.5), (0.45, 0.3, 0.45), (0.15, 0.25, 0.4)]
METAL = [(0.6, 0.6, 0.62), (0.25, 0.25, 0.27), (0.8, 0.8, 0.8), (0.1, 0.1, 0.1)]
WHITE = [(0.9, 0.9, 0.88), (0.85, 0.83, 0.78), (0.95, 0.93, 0.9), (0.8, 0.82, 0.85)]


@dataclass
class Top:
    """Flat support surface in the item's local frame: centre (x, y), height z, half size."""

    x: float
    y: float
    z: float
    hx: float
    hy: float


@dataclass
class Item:
    """A built item: parts (local frame), footprint half size (hx, hy), support tops."""

    parts: list[Part]
    half: tuple[float, float]
    tops: list[Top] = field(default_factory=list)


def pick(rng: np.random.Generator, palette: list) -> np.ndarray:
    """A jittered colour from ``palette``."""
    return jitter_color(rng, palette[int(rng.integers(len(palette)))])


def _box(cx: float, cy: float, z0: float, hx: float, hy: float, height: float,
         color: np.ndarray) -> Part:
    """Box standing on height ``z0`` (bottom) with half extents hx, hy and full ``height``."""
    return Part(BOX, (cx, cy, z0 + height / 2), (hx, hy, height / 2), color)


def _legs(rng: np.random.Generator, hx: float, hy: float, height: float,
          color: np.ndarray, inset: float = 0.04) -> list[Part]:
    round_legs = rng.random() < 0.5
    r = rng.uniform(0.015, 0.03)
    parts = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            cx, cy = sx * (hx - inset), sy * (hy - inset)
            if round_legs:
                parts.append(Part(CYLINDER, (cx, cy, height / 2), (r, r, height / 2), color))
            else:
                parts.append(_box(cx, cy, 0.0, r, r, height, color))
    return parts


def chair(rng: np.random.Generator) -> Item:
    """Four-legged or office chair with a back and optional armrests."""
    hx, hy = rng.uniform(0.2, 0.28), rng.uniform(0.2, 0.27)
    seat_z = rng.uniform(0.42, 0.5)
    frame = pick(rng, WOOD + METAL)
    cover = pick(rng, FABRIC + WOOD)
    thick = rng.uniform(0.03, 0.08)
    parts = [_box(0, 0, seat_z - thick, hx, hy, thick, cover)]
    if rng.random() < 0.4:  # office chair: pedestal and star base
        column = (seat_z - thick) / 2
        parts.append(Part(CYLINDER, (0, 0, column), (0.03, 0.03, column), frame))
        for k in range(5):
            angle = 2 * np.pi * k / 5
            parts.append(Part(BOX, (0.15 * np.cos(angle), 0.15 * np.sin(angle), 0.05),
                              (0.16, 0.02, 0.02), frame, rotation_zyx(angle)))
    else:
        parts += _legs(rng, hx, hy, seat_z - thick, frame, inset=0.03)
    back_h = rng.uniform(0.3, 0.5)
    tilt = rotation_zyx(roll=-rng.uniform(0.0, 0.2))
    parts.append(Part(BOX, (0, hy - 0.02, seat_z + back_h / 2), (hx * rng.uniform(0.85, 1.0), 0.02,
                                                                  back_h / 2), cover, tilt))
    if rng.random() < 0.3:
        for sx in (-1, 1):
            parts.append(_box(sx * hx, 0, seat_z + 0.18, 0.025, hy * 0.8, 0.04, frame))
    return Item(parts, (hx, hy + 0.03))


def table(rng: np.random.Generator, coffee: bool = False, desk: bool = False,
          big: bool = False) -> Item:
    """Dining table (legs or pedestal, square or round top), meeting table, coffee table or
    desk."""
    hx = rng.uniform(0.4, 1.0) if not coffee else rng.uniform(0.35, 0.6)
    hy = rng.uniform(0.3, 0.6) if not coffee else rng.uniform(0.25, 0.4)
    if big:
        hx, hy = rng.uniform(0.9, 2.0), rng.uniform(0.5, 0.8)
    height = rng.uniform(0.7, 0.78) if not coffee else rng.uniform(0.35, 0.5)
    thick = rng.uniform(0.025, 0.06)
    top_color = pick(rng, WOOD + WHITE)
    frame = pick(rng, WOOD + METAL) if rng.random() < 0.5 else top_color
    round_top = not desk and not big and rng.random() < 0.25
    if round_top:
        radius = max(hx, hy)
        parts = [Part(CYLINDER, (0, 0, height - thick / 2), (radius, radius, thick / 2),
                      top_color),
                 Part(CYLINDER, (0, 0, height / 2), (0.05, 0.05, height / 2), frame),
                 Part(CYLINDER, (0, 0, 0.02), (0.25, 0.25, 0.02), frame)]
        return Item(parts, (radius, radius), [Top(0, 0, height, radius * 0.7, radius * 0.7)])
    parts = [_box(0, 0, height - thick, hx, hy, thick, top_color)]
    if desk and rng.random() < 0.6:
        parts.append(_box(-hx + 0.02, 0, 0, 0.02, hy - 0.02, height - thick, frame))
        drawer_w = rng.uniform(0.18, 0.25)
        parts.append(_box(hx - drawer_w, 0, 0, drawer_w, hy - 0.02, height - thick, frame))
        parts.append(_box(0, hy - 0.03, height * 0.4, hx - 0.04, 0.01, height * 0.5, frame))
    else:
        parts += _legs(rng, hx, hy, height - thick, frame)
    return Item(parts, (hx, hy), [Top(0, 0, height, hx - 0.05, hy - 0.05)])


def sofa(rng: np.random.Generator) -> Item:
    """Sofa: base, seat cushions, backrest, arms, short feet."""
    hx, hy = rng.uniform(0.7, 1.3), rng.uniform(0.4, 0.5)
    cloth = pick(rng, FABRIC)
    cushion = jitter_color(rng, cloth, 0.03)
    base_z, seat_z = rng.uniform(0.05, 0.15), rng.uniform(0.38, 0.48)
    arm_w, back_d = rng.uniform(0.08, 0.2), rng.uniform(0.15, 0.25)
    back_h = rng.uniform(0.75, 0.95)
    parts = [_box(0, 0, base_z, hx, hy, seat_z - 0.12 - base_z, cloth),
             _box(0, hy - back_d / 2, base_z, hx, back_d / 2, back_h - base_z, cloth)]
    for sx in (-1, 1):
        parts.append(_box(sx * (hx - arm_w / 2), 0, base_z, arm_w / 2, hy, 0.6 - base_z, cloth))
    seats = int(rng.integers(1, 4))
    inner = hx - arm_w
    for k in range(seats):
        cx = -inner + (2 * k + 1) * inner / seats
        parts.append(_box(cx, -back_d / 2, seat_z - 0.12, inner / seats - 0.01,
                          hy - back_d / 2, 0.12, cushion))
    parts += _legs(rng, hx, hy, base_z, pick(rng, WOOD + METAL))
    return Item(parts, (hx, hy))


def bed(rng: np.random.Generator) -> Item:
    """Bed frame, mattress, duvet and headboard (pillows are separate instances)."""
    hx, hy = rng.uniform(0.45, 0.95), rng.uniform(0.95, 1.1)
    frame = pick(rng, WOOD + FABRIC)
    frame_h = rng.uniform(0.2, 0.35)
    mattress_h = rng.uniform(0.18, 0.28)
    parts = [_box(0, 0, 0.05, hx, hy, frame_h - 0.05, frame),
             _box(0, 0, frame_h, hx - 0.02, hy - 0.02, mattress_h, pick(rng, WHITE)),
             _box(0, hy + 0.03, 0, hx + 0.02, 0.03, rng.uniform(0.8, 1.2), frame)]
    parts += _legs(rng, hx, hy, 0.05, frame)
    if rng.random() < 0.7:
        top = frame_h + mattress_h
        parts.append(_box(0, -hy * 0.25, top - 0.01, hx + 0.02, hy * 0.78, 0.05,
                          pick(rng, FABRIC)))
    return Item(parts, (hx + 0.02, hy + 0.06),
                [Top(0, hy - 0.3, frame_h + mattress_h, hx - 0.2, 0.1)])


def cabinet(rng: np.random.Generator, small: bool = False) -> Item:
    """Cabinet / dresser / nightstand / kitchen counter: body, door or drawer fronts, handles."""
    if small:
        hx, hy, height = rng.uniform(0.2, 0.3), rng.uniform(0.18, 0.25), rng.uniform(0.45, 0.65)
    else:
        hx, hy = rng.uniform(0.3, 1.2), rng.uniform(0.2, 0.35)
        height = rng.uniform(0.7, 1.0) if rng.random() < 0.6 else rng.uniform(1.2, 2.1)
    body = pick(rng, WOOD + WHITE)
    front = jitter_color(rng, body, 0.04)
    handle = pick(rng, METAL)
    parts = [_box(0, 0.01, 0.05, hx, hy - 0.01, height - 0.05, body),
             _box(0, 0.01, 0.0, hx - 0.02, hy - 0.03, 0.05, jitter_color(rng, body, 0.1))]
    columns = max(1, int(round(hx / rng.uniform(0.25, 0.45))))
    rows = int(rng.integers(1, 4)) if height < 1.1 else 1
    cell_w, cell_h = 2 * hx / columns, (height - 0.08) / rows
    for i in range(columns):
        for j in range(rows):
            cx, cz = -hx + (i + 0.5) * cell_w, 0.06 + (j + 0.5) * cell_h
            parts.append(Part(BOX, (cx, -hy - 0.005, cz), (cell_w / 2 - 0.006, 0.01,
                                                         cell_h / 2 - 0.006), front))
            parts.append(Part(BOX, (cx, -hy - 0.025, cz + cell_h * 0.3), (0.05, 0.01, 0.01),
                              handle))
    return Item(parts, (hx, hy + 0.03), [Top(0, 0, height, hx - 0.03, hy - 0.03)])


def bookshelf(rng: np.random.Generator) -> Item:
    """Open shelf unit: sides, back, boards, and rows of books of varied colour."""
    hx, hy = rng.uniform(0.35, 0.9), rng.uniform(0.14, 0.22)
    height = rng.uniform(0.8, 2.2)
    wood = pick(rng, WOOD + WHITE)
    parts = [_box(sx * (hx - 0.01), 0, 0, 0.01, hy, height, wood) for sx in (-1, 1)]
    parts.append(_box(0, hy - 0.005, 0, hx, 0.005, height, wood))
    levels = max(2, int(height / rng.uniform(0.3, 0.4)))
    step = height / levels
    for k in range(levels + 1):
        z = min(k * step, height - 0.02)
        parts.append(_box(0, 0, z, hx - 0.02, hy - 0.01, 0.02, wood))
        if k < levels and rng.random() < 0.8:
            x = -hx + 0.03
            while x < hx - 0.05:
                w = rng.uniform(0.015, 0.04)
                h = step * rng.uniform(0.55, 0.9)
                if rng.random() < 0.85:
                    parts.append(_box(x + w, rng.uniform(-0.02, 0.02), z + 0.02, w, hy * 0.8, h,
                                      pick(rng, FABRIC + WHITE)))
                x += 2 * w + rng.uniform(0.0, 0.02) + (0.2 if rng.random() < 0.05 else 0.0)
    return Item(parts, (hx, hy), [Top(0, 0, height, hx - 0.03, hy - 0.02)])


def lamp(rng: np.random.Generator, floor: bool) -> Item:
    """Floor or table lamp: base, stem, cylindrical shade."""
    height = rng.uniform(1.3, 1.8) if floor else rng.uniform(0.3, 0.6)
    metal, shade = pick(rng, METAL), pick(rng, WHITE + FABRIC)
    base_r = rng.uniform(0.1, 0.18) if floor else rng.uniform(0.06, 0.1)
    shade_r = rng.uniform(0.15, 0.25) if floor else rng.uniform(0.1, 0.16)
    shade_h = shade_r * rng.uniform(0.8, 1.3)
    return Item([Part(CYLINDER, (0, 0, 0.015), (base_r, base_r, 0.015), metal),
                 Part(CYLINDER, (0, 0, height / 2), (0.012, 0.012, height / 2), metal),
                 Part(CYLINDER, (0, 0, height), (shade_r, shade_r, shade_h / 2), shade)],
                (shade_r, shade_r))


def monitor(rng: np.random.Generator) -> Item:
    """Flat screen on a stand (dark bezel; the screen reads as near-black)."""
    width, height = rng.uniform(0.22, 0.36), rng.uniform(0.15, 0.24)
    body = pick(rng, METAL[1:2] + METAL[3:])
    lift = rng.uniform(0.08, 0.15)
    return Item([_box(0, 0.02, 0, 0.1, 0.08, 0.015, body),
                 _box(0, 0.05, 0, 0.025, 0.012, lift + height, body),
                 _box(0, 0.0, lift, width, 0.02, 2 * height, body),
                 _box(0, -0.021, lift + 0.01, width - 0.01, 0.002, 2 * height - 0.02,
                      jitter_color(rng, (0.05, 0.06, 0.08), 0.02))], (width, 0.09))


def small_object(rng: np.random.Generator) -> tuple[Item, str]:
    """Clutter for tops and floors: box, cup, bottle, book, bag, keyboard, trash can, plant."""
    kind = str(rng.choice(["box", "cup", "bottle", "book", "bag", "keyboard", "trash_can",
                           "plant"]))
    color = jitter_color(rng, rng.uniform(0.05, 0.95, 3), 0.02)
    if kind == "box":
        hx, hy, h = rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.3), rng.uniform(0.08, 0.5)
        cardboard = jitter_color(rng, (0.7, 0.55, 0.35), 0.05)
        return Item([_box(0, 0, 0, hx, hy, h, cardboard if rng.random() < 0.6 else color)],
                    (hx, hy), [Top(0, 0, h, hx * 0.8, hy * 0.8)]), kind
    if kind in ("cup", "bottle"):
        r = rng.uniform(0.03, 0.05)
        h = rng.uniform(0.08, 0.12) if kind == "cup" else rng.uniform(0.2, 0.32)
        parts = [Part(CYLINDER, (0, 0, h / 2), (r, r, h / 2), color)]
        if kind == "bottle":
            parts.append(Part(CYLINDER, (0, 0, h + 0.04), (r * 0.35, r * 0.35, 0.04), color))
        return Item(parts, (r, r)), kind
    if kind == "book":
        hx, hy, h = rng.uniform(0.07, 0.15), rng.uniform(0.1, 0.2), rng.uniform(0.015, 0.06)
        return Item([_box(0, 0, 0, hx, hy, h, color)], (hx, hy)), kind
    if kind == "bag":
        hx, hy, h = rng.uniform(0.12, 0.25), rng.uniform(0.08, 0.15), rng.uniform(0.2, 0.4)
        return Item([Part(ELLIPSOID, (0, 0, h / 2), (hx, hy, h / 2), color)], (hx, hy)), kind
    if kind == "keyboard":
        return Item([_box(0, 0, 0, rng.uniform(0.18, 0.23), 0.07, 0.025,
                          pick(rng, METAL))], (0.23, 0.07)), kind
    if kind == "trash_can":
        r, h = rng.uniform(0.12, 0.2), rng.uniform(0.3, 0.6)
        if rng.random() < 0.5:
            return Item([Part(CYLINDER, (0, 0, h / 2), (r, r, h / 2), color)], (r, r)), kind
        return Item([_box(0, 0, 0, r, r * 0.8, h, color)], (r, r * 0.8)), kind
    pot_r, pot_h = rng.uniform(0.08, 0.2), rng.uniform(0.12, 0.35)
    leaf = rng.uniform(0.15, 0.45)
    green = jitter_color(rng, (0.2, 0.4, 0.15), 0.05)
    parts = [Part(CYLINDER, (0, 0, pot_h / 2), (pot_r, pot_r, pot_h / 2), pick(rng, WHITE))]
    for _ in range(int(rng.integers(3, 7))):  # a clump of leaf masses, not one ball
        r = leaf * rng.uniform(0.35, 0.7)
        parts.append(Part(ELLIPSOID, (rng.normal(0, leaf * 0.35), rng.normal(0, leaf * 0.35),
                                      pot_h + rng.uniform(0.3, 1.3) * leaf),
                          (r, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.8, 1.6)),
                          jitter_color(rng, green, 0.03)))
    return Item(parts, (max(pot_r, leaf * 0.7), max(pot_r, leaf * 0.7))), "plant"

"""Indoor rooms for the RGB-D generator (``rgbd.py`` scans them, ``rooms.py`` furnishes them).

A rectangular room: floor, four walls (sometimes with pilasters), optional ceiling, doors,
windows with curtains and radiators, pictures. ``Room`` places items against walls or in
the middle without overlaps (touching allowed), and on the tops of other items.
"""
from __future__ import annotations

import numpy as np

from npiseg_train.synth import fixtures as fx
from npiseg_train.synth import furniture as fu
from npiseg_train.synth.scene import (BOX, InstanceTable, Part, Primitive, jitter_color,
                                      place_parts)

WALL_YAWS = (np.pi, -np.pi / 2, 0.0, np.pi / 2)
"""Yaw that puts an item's back (+y local) against wall k: y=0, x=W, y=D, x=0."""


class Room:
    """A room being furnished: primitives, footprints (x0, x1, y0, y1) and free tops."""

    def __init__(self, rng: np.random.Generator, width: float, depth: float,
                 height: float) -> None:
        self.rng = rng
        self.size = np.array([width, depth, height])
        self.table = InstanceTable()
        self.primitives: list[Primitive] = []
        self.footprints: list[np.ndarray] = []
        self.tops: list[tuple[np.ndarray, float, np.ndarray]] = []  # centre, z, half

    def wall_length(self, wall: int) -> float:
        return float(self.size[0] if wall % 2 == 0 else self.size[1])

    def free(self, box: np.ndarray, ignore: int = -1) -> bool:
        if box[0] < -1e-6 or box[2] < -1e-6 or box[1] > self.size[0] + 1e-6 \
                or box[3] > self.size[1] + 1e-6:
            return False
        for k, other in enumerate(self.footprints):
            if k != ignore and box[0] < other[1] - 1e-3 and other[0] < box[1] - 1e-3 \
                    and box[2] < other[3] - 1e-3 and other[2] < box[3] - 1e-3:
                return False
        return True

    def place(self, item: fu.Item, name: str, x: float, y: float, yaw: float, z: float = 0.0,
              check: bool = True, ignore: int = -1) -> int | None:
        """Place ``item``; returns its footprint index, or None when the spot is taken."""
        c, s = abs(np.cos(yaw)), abs(np.sin(yaw))
        hx = c * item.half[0] + s * item.half[1]
        hy = s * item.half[0] + c * item.half[1]
        box = np.array([x - hx, x + hx, y - hy, y + hy])
        if check and not self.free(box, ignore):
            return None
        instance = self.table.new(name)
        self.primitives += place_parts(item.parts, instance, np.array([x, y, z]), yaw)
        rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        for top in item.tops:
            half = np.abs(rot) @ np.array([top.hx, top.hy])
            self.tops.append((np.array([x, y]) + rot @ np.array([top.x, top.y]), z + top.z, half))
        if z > 0.0:
            return -1
        self.footprints.append(box)
        return len(self.footprints) - 1

    def wall_point(self, wall: int, along: float, depth: float) -> tuple[float, float]:
        """Room (x, y) at ``along`` metres along ``wall``, ``depth`` metres out from it."""
        return [(along, depth), (self.size[0] - depth, along), (along, self.size[1] - depth),
                (depth, along)][wall]

    def against_wall(self, item: fu.Item, name: str, wall: int | None = None,
                     tries: int = 20, along: float | None = None,
                     ) -> tuple[int, float, float, float] | None:
        """Put ``item`` with its back touching a wall (at ``along`` metres along it, or a
        random spot); returns (index, x, y, yaw) or None."""
        for _ in range(tries):
            k = int(self.rng.integers(4)) if wall is None else wall
            length = self.wall_length(k)
            if length < 2 * item.half[0]:
                continue
            spot = self.rng.uniform(item.half[0], length - item.half[0]) if along is None \
                else along
            x, y = self.wall_point(k, spot, item.half[1])
            index = self.place(item, name, x, y, WALL_YAWS[k])
            if index is not None:
                return index, x, y, WALL_YAWS[k]
        return None

    def in_middle(self, item: fu.Item, name: str, tries: int = 20,
                  free_yaw: bool = False) -> tuple[int, float, float, float] | None:
        for _ in range(tries):
            yaw = self.rng.uniform(0, 2 * np.pi) if free_yaw else \
                self.rng.integers(4) * np.pi / 2 + self.rng.normal(0, 0.03)
            reach = max(item.half)
            if 2 * reach >= min(self.size[0], self.size[1]):
                return None
            x = self.rng.uniform(reach, self.size[0] - reach)
            y = self.rng.uniform(reach, self.size[1] - reach)
            index = self.place(item, name, x, y, yaw)
            if index is not None:
                return index, x, y, yaw
        return None

    def on_top_of(self, item: fu.Item, name: str, top: int) -> None:
        """Stand ``item`` in the middle of top number ``top`` (e.g. -1: the latest), turned
        like the top's owner faces (approximately: yaw 0 or 90 degrees by its shape)."""
        if not self.tops:
            return
        center, z, half = self.tops[top]
        yaw = 0.0 if half[0] >= half[1] else np.pi / 2
        self.place(item, name, *center, yaw + (np.pi if self.rng.random() < 0.5 else 0.0),
                   z=z, check=False)

    def on_tops(self, count: int) -> None:
        """Scatter ``count`` small objects on the free tops (and boxes on boxes)."""
        for _ in range(count):
            if not self.tops:
                return
            center, z, half = self.tops[int(self.rng.integers(len(self.tops)))]
            item, name = fu.small_object(self.rng)
            if name in ("trash_can", "bag") or max(item.half) > min(half) * 1.5 + 0.05:
                continue
            offset = self.rng.uniform(-1, 1, 2) * np.maximum(half - max(item.half), 0)
            self.place(item, name, *(center + offset), self.rng.uniform(0, 2 * np.pi), z=z,
                       check=False)


def build_shell(room: Room, with_ceiling: bool) -> None:
    """Floor, four walls, optional ceiling: boxes just outside the room's interior."""
    rng = room.rng
    width, depth, height = room.size
    wall_color = fu.pick(rng, fu.WHITE + [(0.75, 0.7, 0.6), (0.6, 0.65, 0.7)])
    slabs = [("floor", (width / 2, depth / 2, -0.05), (width / 2 + 0.1, depth / 2 + 0.1, 0.05),
              fu.pick(rng, fu.WOOD + [(0.5, 0.5, 0.5), (0.6, 0.55, 0.5)]))]
    for k, (center, half) in enumerate([((width / 2, -0.05), (width / 2 + 0.1, 0.05)),
                                        ((width + 0.05, depth / 2), (0.05, depth / 2 + 0.1)),
                                        ((width / 2, depth + 0.05), (width / 2 + 0.1, 0.05)),
                                        ((-0.05, depth / 2), (0.05, depth / 2 + 0.1))]):
        color = wall_color if rng.random() < 0.8 else fu.pick(rng, fu.WHITE + fu.FABRIC)
        slabs.append(("wall", (*center, height / 2), (*half, height / 2), color))
    if with_ceiling:
        slabs.append(("ceiling", (width / 2, depth / 2, height + 0.05),
                      (width / 2 + 0.1, depth / 2 + 0.1, 0.05), fu.pick(rng, fu.WHITE)))
    for name, center, half, color in slabs:
        instance = room.table.new(name)
        room.primitives += place_parts([Part(BOX, center, half, color)], instance,
                                       np.zeros(3), 0.0)
        if name == "wall" and rng.random() < 0.2:
            # Pilasters, chimney breasts and duct casings break up the plane of a wall.
            wall = instance - 2
            out, half_w = rng.uniform(0.1, 0.45), rng.uniform(0.15, 0.5)
            along = rng.uniform(half_w, room.wall_length(wall) - half_w)
            item = fu.Item([Part(BOX, (0, -out / 2, height / 2), (half_w, out / 2, height / 2),
                                 color)], (half_w, out / 2))
            x, y = room.wall_point(wall, along, 0.0)
            room.primitives += place_parts(item.parts, instance, np.array([x, y, 0.0]),
                                           WALL_YAWS[wall])
            room.footprints.append(_wall_band(room, wall, along, half_w, out))


def corner_block(room: Room) -> None:
    """Fill one corner with a solid block (a stairwell, shaft or the neighbour's room) so the
    floor plan becomes L-shaped; its two inner faces are one new wall instance."""
    rng = room.rng
    width, depth, height = room.size
    bx, by = rng.uniform(0.8, 0.4 * width), rng.uniform(0.8, 0.4 * depth)
    x0 = 0.0 if rng.random() < 0.5 else width - bx
    y0 = 0.0 if rng.random() < 0.5 else depth - by
    color = jitter_color(rng, room.primitives[1].color, 0.02)  # painted like the walls
    part = Part(BOX, (x0 + bx / 2, y0 + by / 2, height / 2), (bx / 2, by / 2, height / 2), color)
    room.primitives += place_parts([part], room.table.new("wall"), np.zeros(3), 0.0)
    room.footprints.append(np.array([x0, x0 + bx, y0, y0 + by]))


def add_wall_items(room: Room) -> None:
    """Door, windows (with radiators and curtains), pictures, whiteboard, wall-mounted TV
    and shelves on the walls."""
    rng = room.rng
    height = room.size[2]
    specs = [("door", rng.uniform(0.4, 0.5), 0.0, rng.uniform(1.95, 2.1), 0.03,
              fu.WOOD + fu.WHITE)]
    for _ in range(int(rng.integers(0, 3))):
        specs.append(("window", rng.uniform(0.4, 1.0), rng.uniform(0.7, 1.0),
                      rng.uniform(1.0, 1.5), 0.04, [(0.6, 0.7, 0.8), (0.85, 0.88, 0.9)]))
    for _ in range(int(rng.integers(0, 4))):
        specs.append(("picture", rng.uniform(0.15, 0.5), rng.uniform(1.2, 1.6),
                      rng.uniform(0.2, 0.7), 0.02, fu.FABRIC + fu.WOOD))
    if rng.random() < 0.3:
        specs.append(("whiteboard", rng.uniform(0.6, 1.2), 0.9, 1.1, 0.02, fu.WHITE))
    if rng.random() < 0.2:
        specs.append(("tv", rng.uniform(0.45, 0.8), rng.uniform(1.0, 1.3), rng.uniform(0.5, 0.9),
                      0.05, [(0.05, 0.05, 0.06), (0.12, 0.12, 0.13)]))
    for _ in range(int(rng.random() < 0.35) * int(rng.integers(1, 3))):
        specs.append(("shelf", rng.uniform(0.3, 0.7), rng.uniform(1.1, 1.8), 0.025,
                      rng.uniform(0.18, 0.28), fu.WOOD + fu.WHITE))
    for name, half_w, bottom, tall, thick, palette in specs:
        tall = min(tall, height - bottom - 0.1)
        # Glass gives depth sensors few valid pixels: most window returns are lost.
        pane = Part(BOX, (0, -thick / 2, bottom + tall / 2), (half_w, thick / 2, tall / 2),
                    fu.pick(rng, palette),
                    dropout=rng.uniform(0.3, 0.9) if name == "window" else 0.0)
        # Wall shelves carry clutter like any other top.
        tops = [fu.Top(0, -thick / 2, bottom + tall, half_w - 0.03, thick / 2 - 0.02)] \
            if name == "shelf" else []
        item = fu.Item([pane], (half_w, thick / 2), tops)
        for _ in range(10):
            wall = int(rng.integers(4))
            length = room.wall_length(wall)
            if length < 2 * half_w + 0.2:
                continue
            along = rng.uniform(half_w + 0.05, length - half_w - 0.05)
            x, y = [(along, 0.0), (room.size[0], along), (along, room.size[1]), (0.0, along)][wall]
            blocked = bottom < 1.0 and not room.free(_wall_band(room, wall, along, half_w))
            if not blocked:
                room.place(item, name, x, y, WALL_YAWS[wall], check=False)
                if bottom < 1.0:  # keep furniture away from doors and low windows
                    room.footprints.append(_wall_band(room, wall, along, half_w))
                if name == "window" and rng.random() < 0.35:
                    for side in (-1, 1):
                        spot = along + side * (half_w + 0.2)
                        if 0.2 < spot < length - 0.2:
                            cx, cy = room.wall_point(wall, spot, 0.0)
                            room.place(fx.curtain(rng, 0.4, height - 0.15), "curtain", cx, cy,
                                       WALL_YAWS[wall], check=False)
                if name == "window" and rng.random() < 0.5:
                    rad = fu.Item([Part(BOX, (0, -0.06, 0.35), (half_w * 0.8, 0.05, 0.25),
                                        fu.pick(rng, fu.WHITE))], (half_w * 0.8, 0.05))
                    room.place(rad, "radiator", x, y, WALL_YAWS[wall], check=False)
                break


def _wall_band(room: Room, wall: int, along: float, half_w: float,
               depth: float = 0.6) -> np.ndarray:
    """Footprint ``depth`` metres deep along a wall (kept clear in front of doors and low
    windows, or taken by a pilaster)."""
    a0, a1 = along - half_w, along + half_w
    w, d = room.size[:2]
    return [np.array([a0, a1, 0, depth]), np.array([w - depth, w, a0, a1]),
            np.array([a0, a1, d - depth, d]), np.array([0, depth, a0, a1])][wall]

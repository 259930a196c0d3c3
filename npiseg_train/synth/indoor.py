"""Indoor rooms for the RGB-D generator (``rgbd.py`` scans them).

A rectangular room (floor, four walls, optional ceiling, doors, windows, wall decorations)
is furnished by a room type (bedroom, office, living room, meeting room, storage): items go
against walls or into the middle, chairs tuck under tables, clutter stands on tops, boxes
stack.
"""
from __future__ import annotations

import numpy as np

from npiseg_train.synth import fixtures as fx
from npiseg_train.synth import furniture as fu
from npiseg_train.synth.scene import (BOX, InstanceTable, Part, Primitive, jitter_color,
                                      place_parts)

WALL_YAWS = (np.pi, -np.pi / 2, 0.0, np.pi / 2)
"""Yaw that puts an item's back (+y local) against wall k: y=0, x=W, y=D, x=0."""


class _Room:
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


def _shell(room: _Room, with_ceiling: bool) -> None:
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


def _wall_items(room: _Room) -> None:
    """Door, windows (with radiators below), pictures and a whiteboard on the walls."""
    rng = room.rng
    height = room.size[2]
    specs = [("door", rng.uniform(0.4, 0.5), 0.0, rng.uniform(1.95, 2.1), 0.03, fu.WOOD + fu.WHITE)]
    for _ in range(int(rng.integers(0, 3))):
        specs.append(("window", rng.uniform(0.4, 1.0), rng.uniform(0.7, 1.0),
                      rng.uniform(1.0, 1.5), 0.04, [(0.6, 0.7, 0.8), (0.85, 0.88, 0.9)]))
    for _ in range(int(rng.integers(0, 4))):
        specs.append(("picture", rng.uniform(0.15, 0.5), rng.uniform(1.2, 1.6),
                      rng.uniform(0.2, 0.7), 0.02, fu.FABRIC + fu.WOOD))
    if rng.random() < 0.3:
        specs.append(("whiteboard", rng.uniform(0.6, 1.2), 0.9, 1.1, 0.02, fu.WHITE))
    for name, half_w, bottom, tall, thick, palette in specs:
        tall = min(tall, height - bottom - 0.1)
        item = fu.Item([Part(BOX, (0, -thick / 2, bottom + tall / 2), (half_w, thick / 2, tall / 2),
                             fu.pick(rng, palette))], (half_w, thick / 2))
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


def _wall_band(room: _Room, wall: int, along: float, half_w: float,
               depth: float = 0.6) -> np.ndarray:
    """Footprint ``depth`` metres deep along a wall (kept clear in front of doors and low
    windows, or taken by a pilaster)."""
    a0, a1 = along - half_w, along + half_w
    w, d = room.size[:2]
    return [np.array([a0, a1, 0, depth]), np.array([w - depth, w, a0, a1]),
            np.array([a0, a1, d - depth, d]), np.array([0, depth, a0, a1])][wall]


def _pillows(room: _Room, x: float, y: float, yaw: float, item: fu.Item) -> None:
    """One or two pillows on the bed's head end (their own instances)."""
    top = item.tops[0]
    count = int(room.rng.integers(1, 3))
    for k in range(count):
        px = (k - (count - 1) / 2) * top.hx * 1.1
        pillow = fu.Item([Part(fu.ELLIPSOID, (0, 0, 0.07), (min(0.3, top.hx * 0.9 / count + 0.1),
                                                           0.18, 0.08),
                               fu.pick(room.rng, fu.WHITE + fu.FABRIC))], (0.3, 0.18))
        c, s = np.cos(yaw), np.sin(yaw)
        room.place(pillow, "pillow", x + c * px - s * top.y, y + s * px + c * top.y, yaw,
                   z=top.z, check=False)


def _table_with_chairs(room: _Room, big: bool) -> None:
    """A table in the middle with chairs tucked in along its sides, facing it."""
    item = fu.table(room.rng, big=big)
    placed = room.in_middle(item, "table")
    if placed is None:
        return
    index, x, y, yaw = placed
    box = room.footprints[index]
    for side in range(4):
        length = (box[1] - box[0]) if side % 2 == 0 else (box[3] - box[2])
        seats = int(room.rng.integers(0, max(1, int(length / 0.6)) + 1))
        for k in range(seats):
            chair = fu.chair(room.rng)
            along = (k + 0.5) / seats
            reach = chair.half[1] * room.rng.uniform(0.2, 0.9)
            cx, cy = [(box[0] + along * (box[1] - box[0]), box[2] - reach),
                      (box[1] + reach, box[2] + along * (box[3] - box[2])),
                      (box[0] + along * (box[1] - box[0]), box[3] + reach),
                      (box[0] - reach, box[2] + along * (box[3] - box[2]))][side]
            # The chair's back (+y local) points away from the table.
            chair_yaw = WALL_YAWS[side] + room.rng.normal(0, 0.15)
            room.place(chair, "chair", cx, cy, chair_yaw, ignore=index)


def _desk_set(room: _Room) -> None:
    """Desk against a wall with a chair, monitor(s), keyboard and maybe a lamp."""
    desk = fu.table(room.rng, desk=True)
    placed = room.against_wall(desk, "desk")
    if placed is None:
        return
    index, x, y, yaw = placed
    c, s = np.cos(yaw), np.sin(yaw)
    local = lambda u, v: (x + c * u - s * v, y + s * u + c * v)  # noqa: E731
    top_z = desk.tops[0].z
    for k in range(int(room.rng.integers(1, 3))):
        u = (k - 0.5) * 0.5 if k else room.rng.uniform(-0.2, 0.2)
        room.place(fu.monitor(room.rng), "monitor", *local(u, desk.half[1] - 0.15),
                   yaw + room.rng.normal(0, 0.1), z=top_z, check=False)
    room.place(fu.Item([fu._box(0, 0, 0, 0.21, 0.07, 0.025, fu.pick(room.rng, fu.METAL))],
                       (0.21, 0.07)), "keyboard", *local(0.0, -desk.half[1] + 0.2),
               yaw + room.rng.normal(0, 0.05), z=top_z, check=False)
    chair = fu.chair(room.rng)
    room.place(chair, "chair", *local(room.rng.uniform(-0.2, 0.2), -desk.half[1] - 0.15),
               yaw + np.pi + room.rng.normal(0, 0.3), ignore=index)


ROOM_TYPES = ("bedroom", "office", "living", "meeting", "storage", "kitchen", "bathroom")
ROOM_WEIGHTS = (0.17, 0.2, 0.17, 0.12, 0.08, 0.14, 0.12)
"""How often each room type is drawn (ScanNet is mostly offices, bedrooms, living rooms,
kitchens and bathrooms)."""


def room_size(rng: np.random.Generator, kind: str) -> np.ndarray:
    """(3,) width, depth, height of a room of type ``kind``, metres."""
    if kind == "bathroom":
        return np.array([rng.uniform(1.8, 3.5), rng.uniform(1.8, 3.2), rng.uniform(2.3, 2.7)])
    return np.array([rng.uniform(3.0, 8.0), rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.0)])


def _kitchen(room: _Room) -> None:
    """Counter run with sink and wall cabinets, fridge beside it, maybe a dining table."""
    rng = room.rng
    wall = int(rng.integers(4))
    length = min(room.wall_length(wall) - 0.1, rng.uniform(1.2, 4.0))
    item, sink = fx.counter(rng, length)
    placed = room.against_wall(item, "counter", wall=wall, tries=5)
    if placed is not None:
        _, x, y, yaw = placed
        if sink is not None:
            room.place(sink, "sink", x, y, yaw, check=False)
        along = x if wall % 2 == 0 else y
        if rng.random() < 0.7:
            upper = fx.wall_cabinet(rng, length * rng.uniform(0.5, 1.0))
            ux, uy = room.wall_point(wall, along, upper.half[1])
            room.place(upper, "cabinet", ux, uy, yaw, z=rng.uniform(1.4, 1.6), check=False)
        if rng.random() < 0.5:
            room.on_top_of(fx.microwave(rng), "microwave", -1)
        fridge = fx.refrigerator(rng)
        for side in (-1, 1):  # right beside the counter, touching it
            spot = along + side * (length / 2 + fridge.half[0] + 0.01)
            if room.against_wall(fridge, "refrigerator", wall=wall, tries=1, along=spot):
                break
    if rng.random() < 0.6:
        _table_with_chairs(room, big=False)


def _bathroom(room: _Room) -> None:
    """Toilet, wash basin with a mirror above it, maybe a bathtub in a corner."""
    rng = room.rng
    if rng.random() < 0.6:
        tub = fx.bathtub(rng)
        wall = int(rng.integers(4))
        room.against_wall(tub, "bathtub", wall=wall, tries=3, along=tub.half[0] + 0.005)
    room.against_wall(fx.toilet(rng), "toilet")
    placed = room.against_wall(fx.bathroom_sink(rng), "sink")
    if placed is not None:
        _, x, y, yaw = placed
        wall = WALL_YAWS.index(yaw)
        along = x if wall % 2 == 0 else y
        mx, my = room.wall_point(wall, along, 0.0)
        mirror = fu.Item([Part(BOX, (0, -0.01, 1.5), (rng.uniform(0.25, 0.5), 0.01,
                                                         rng.uniform(0.3, 0.45)),
                               jitter_color(rng, (0.55, 0.6, 0.65), 0.05))], (0.5, 0.01))
        room.place(mirror, "mirror", mx, my, yaw, check=False)
    if rng.random() < 0.5:
        room.against_wall(fu.cabinet(rng, small=True), "cabinet")


def furnish(room: _Room, kind: str) -> None:
    """Fill ``room`` with the furniture mix of a room type, then clutter."""
    rng = room.rng
    area = room.size[0] * room.size[1]
    if kind == "bedroom":
        bed = fu.bed(rng)
        placed = room.against_wall(bed, "bed")
        if placed is not None:
            _pillows(room, placed[1], placed[2], placed[3], bed)
        for _ in range(int(rng.integers(1, 3))):
            room.against_wall(fu.cabinet(rng, small=True), "cabinet")
        room.against_wall(fu.cabinet(rng), "cabinet")
    elif kind == "office":
        for _ in range(int(rng.integers(1, 2 + int(area // 10)))):
            _desk_set(room)
    elif kind == "living":
        sofa = room.against_wall(fu.sofa(rng), "sofa")
        if sofa is not None:
            room.in_middle(fu.table(rng, coffee=True), "table")
        for _ in range(int(rng.integers(0, 3))):
            room.in_middle(fu.chair(rng), "chair", free_yaw=True)
        if rng.random() < 0.5:
            rug = fu.Item([fu._box(0, 0, 0, rng.uniform(0.6, 1.2), rng.uniform(0.5, 0.9), 0.012,
                                   fu.pick(rng, fu.FABRIC))], (1.2, 0.9))
            rx, ry = rng.uniform(1.2, room.size[0] - 1.2), rng.uniform(0.9, room.size[1] - 0.9)
            room.place(rug, "rug", rx, ry, 0.0, check=False)
            room.footprints.pop()  # furniture may stand on a rug
    elif kind == "meeting":
        _table_with_chairs(room, big=True)
    elif kind == "kitchen":
        _kitchen(room)
    elif kind == "bathroom":
        _bathroom(room)
        room.on_tops(int(rng.integers(1, 5)))
        return
    if kind == "living" and rng.random() < 0.6:
        stand = fu.cabinet(rng)
        if stand.tops[0].z < 1.0 and room.against_wall(stand, "cabinet", tries=5):
            room.on_top_of(fx.tv(rng), "tv", -1)
    # Middle of the room: furniture groups in proportion to the floor area.
    for _ in range(int(rng.integers(0, 2 + int(area // 10)))):
        draw = rng.random()
        if draw < 0.5:
            _table_with_chairs(room, big=rng.random() < 0.3)
        elif draw < 0.65:
            if room.in_middle(fu.sofa(rng), "sofa", free_yaw=rng.random() < 0.3):
                room.in_middle(fu.table(rng, coffee=True), "table")
        elif draw < 0.85:
            room.in_middle(fu.chair(rng), "chair", free_yaw=True)
        else:
            room.in_middle(fu.table(rng, desk=True), "desk")
    # Along the walls.
    for _ in range(int(rng.integers(3, 5 + int(area // 6)))):
        draw = rng.random()
        if draw < 0.3:
            room.against_wall(fu.cabinet(rng), "cabinet")
        elif draw < 0.55:
            room.against_wall(fu.bookshelf(rng), "bookshelf")
        elif draw < 0.75:
            _desk_set(room)
        elif draw < 0.85:
            room.against_wall(fu.sofa(rng) if rng.random() < 0.5 else fu.chair(rng),
                              "sofa" if rng.random() < 0.5 else "chair")
        else:
            room.in_middle(fu.lamp(rng, floor=True), "lamp")
    boxes = int(rng.integers(4, 14)) if kind == "storage" else int(rng.integers(1, 6))
    if kind == "storage":
        for _ in range(int(rng.integers(1, 4))):
            room.against_wall(fu.bookshelf(rng), "bookshelf")
    for _ in range(boxes + int(rng.integers(0, 4))):
        item, name = fu.small_object(rng)
        if rng.random() < 0.5 and name == "box":
            room.against_wall(item, name, tries=5)
        else:
            room.in_middle(item, name, tries=5, free_yaw=True)
    for center, z, half in list(room.tops):
        if rng.random() < 0.25 and z < 0.9:
            lamp = fu.lamp(rng, floor=False)
            if max(lamp.half) < min(half) + 0.05:
                room.place(lamp, "lamp", *center, 0.0, z=z, check=False)
    room.on_tops(int(rng.integers(4, 16)))

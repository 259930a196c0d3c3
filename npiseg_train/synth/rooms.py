"""Room types: what furniture a bedroom, office, living room, meeting room, storage room,
kitchen or bathroom gets, and how the pieces are grouped (chairs around tables, monitors on
desks, pillows on beds, a fridge beside the counter, a mirror over the basin)."""
from __future__ import annotations

import numpy as np

from npiseg_train.synth import fixtures as fx
from npiseg_train.synth import furniture as fu
from npiseg_train.synth.indoor import WALL_YAWS, Room
from npiseg_train.synth.scene import BOX, Part, jitter_color


def _pillows(room: Room, x: float, y: float, yaw: float, item: fu.Item) -> None:
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


def _table_with_chairs(room: Room, big: bool) -> None:
    """A table in the middle with chairs tucked in along its sides, facing it."""
    placed = None
    for attempt in range(3):  # a big table may not fit: fall back to smaller ones
        placed = room.in_middle(fu.table(room.rng, big=big and attempt == 0), "table", tries=10)
        if placed is not None:
            break
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


def _desk_set(room: Room) -> None:
    """Desk against a wall with a chair in front, one or two monitors and a keyboard."""
    desk = fu.table(room.rng, desk=True)
    placed = room.against_wall(desk, "desk")
    if placed is None:
        return
    index, x, y, yaw = placed
    c, s = np.cos(yaw), np.sin(yaw)

    def local(u: float, v: float) -> tuple[float, float]:
        """Room (x, y) of the point (u, v) in the desk's frame."""
        return x + c * u - s * v, y + s * u + c * v

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


def _kitchen(room: Room) -> None:
    """Counter run with sink and wall cabinets, fridge beside it, maybe a dining table."""
    rng = room.rng
    placed = None
    for wall in rng.permutation(4):  # doors and windows may block a wall: try them all
        wall = int(wall)
        for length in (rng.uniform(1.8, 4.0), rng.uniform(1.0, 1.8)):
            length = min(room.wall_length(wall) - 0.1, length)
            item, sink = fx.counter(rng, length)
            placed = room.against_wall(item, "counter", wall=wall, tries=4)
            if placed is not None:
                break
        if placed is not None:
            break
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


def _bathroom(room: Room) -> None:
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
                               jitter_color(rng, (0.55, 0.6, 0.65), 0.05),
                               dropout=rng.uniform(0.3, 0.8))], (0.5, 0.01))
        room.place(mirror, "mirror", mx, my, yaw, check=False)
    if rng.random() < 0.5:
        room.against_wall(fu.cabinet(rng, small=True), "cabinet")


def furnish(room: Room, kind: str) -> None:
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

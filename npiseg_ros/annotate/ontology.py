"""Classes and attributes of the objects a person labels, read from a YAML file.

An ontology names the classes (id = the value written into exports, name, keyboard key,
thing or stuff, KITTI box type, the id of its moving variant) and the attributes an object
may carry (a name, the allowed values, the default, the classes it applies to). Shipped:
``config/ontology_semantickitti.yaml`` (SemanticKITTI raw ids, the default) and
``config/ontology_nuscenes.yaml`` (nuScenes-lidarseg indices 0..31).

File format (every key checked; a mistake is a :class:`OntologyError` naming the file and the
entry)::

    name: semantickitti
    format: semantickitti | nuscenes     # which dataset's files the exports follow
    unassigned: 0                        # id of the background and of objects without class
    default_class: car                   # the class new objects get until another is picked
    classes:
      - {id: 10, name: car, key: "1", thing: true, moving_id: 252, kitti: Car}
    attributes:
      - {name: moving, values: [false, true], default: false, classes: [car]}
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Ontology", "OntologyClass", "OntologyAttribute", "OntologyError", "load_ontology",
           "default_ontology_path", "ONTOLOGY_FORMATS", "RESERVED_KEYS"]

ONTOLOGY_FORMATS = ("semantickitti", "nuscenes")
RESERVED_KEYS = frozenset("nurdacvtzfopbgsyxhjklme+-=") | frozenset(" ")
"""Keys the page uses for its own commands; class keys must avoid them."""
KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram",
               "Misc", "DontCare")


class OntologyError(ValueError):
    """The ontology file cannot be used (with the file and the entry at fault)."""


@dataclass(frozen=True)
class OntologyClass:
    """One class.

    Attributes:
        id: the value written into exports (``.label`` lower 16 bits, lidarseg byte).
        name: unique name (``car``, ``vehicle.car``).
        key: one keyboard character that picks the class in the page, or "".
        thing: countable objects (their instance id is exported); stuff classes get instance 0.
        moving_id: the id written instead when the object's ``moving`` attribute is true
            (SemanticKITTI's moving-car = 252 ...), or None.
        kitti: the KITTI ``label_2`` type of its boxes (``Car``, ``Pedestrian``, ...).
    """

    id: int
    name: str
    key: str = ""
    thing: bool = False
    moving_id: int | None = None
    kitti: str = "Misc"

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "key": self.key, "thing": self.thing,
                "moving_id": self.moving_id, "kitti": self.kitti}


@dataclass(frozen=True)
class OntologyAttribute:
    """An attribute: ``values`` allowed (strings or booleans), ``default``, and the class names
    it applies to (empty: every class)."""

    name: str
    values: tuple
    default: object
    classes: tuple[str, ...] = ()

    def applies_to(self, class_name: str) -> bool:
        return not self.classes or class_name in self.classes

    def to_json(self) -> dict:
        return {"name": self.name, "values": list(self.values), "default": self.default,
                "classes": list(self.classes)}


@dataclass(frozen=True)
class Ontology:
    """A validated ontology (see the module docstring)."""

    name: str
    format: str
    unassigned: int
    default_class: str
    classes: tuple[OntologyClass, ...]
    attributes: tuple[OntologyAttribute, ...] = ()
    path: str = ""
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({c.name: c for c in self.classes})

    def get(self, name: str | None) -> OntologyClass | None:
        """The class called ``name`` (None for None or an unknown name)."""
        return self._by_name.get(name) if name else None

    def require(self, name: str) -> OntologyClass:
        found = self.get(name)
        if found is None:
            raise OntologyError(f"class {name!r} is not in the ontology {self.name!r} "
                                f"({', '.join(c.name for c in self.classes[:12])}, ...)")
        return found

    def default_attributes(self, class_name: str) -> dict:
        return {a.name: a.default for a in self.attributes if a.applies_to(class_name)}

    def check_attribute(self, class_name: str, name: str, value) -> None:
        """Raise OntologyError unless ``name`` = ``value`` is allowed for ``class_name``."""
        for attribute in self.attributes:
            if attribute.name == name:
                if not attribute.applies_to(class_name):
                    raise OntologyError(f"attribute {name!r} does not apply to {class_name!r}")
                if value not in attribute.values or isinstance(value, bool) != any(
                        isinstance(v, bool) for v in attribute.values):
                    raise OntologyError(f"attribute {name!r} takes one of "
                                        f"{list(attribute.values)}, got {value!r}")
                return
        raise OntologyError(f"no attribute {name!r} in the ontology {self.name!r}")

    def export_id(self, class_name: str | None, attributes: dict | None = None) -> int:
        """The id written for an object of ``class_name`` (moving variant when its ``moving``
        attribute is true); :attr:`unassigned` without a class."""
        found = self.get(class_name)
        if found is None:
            return self.unassigned
        if found.moving_id is not None and (attributes or {}).get("moving") is True:
            return found.moving_id
        return found.id

    @property
    def max_id(self) -> int:
        return max([self.unassigned] + [c.id for c in self.classes]
                   + [c.moving_id for c in self.classes if c.moving_id is not None])

    def to_json(self) -> dict:
        return {"name": self.name, "format": self.format, "unassigned": self.unassigned,
                "default_class": self.default_class, "path": self.path,
                "classes": [c.to_json() for c in self.classes],
                "attributes": [a.to_json() for a in self.attributes]}


def default_ontology_path(name: str = "semantickitti") -> Path:
    """The shipped ``config/ontology_<name>.yaml``."""
    from npiseg_ros.resources import share_path

    return share_path(f"config/ontology_{name}.yaml")


def _class_id(value, where: str, high: int = 0xFFFF) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise OntologyError(f"{where}: id must be an integer in [0, {high}], got {value!r}")
    return value


def _parse_class(entry, where: str, high: int) -> OntologyClass:
    if not isinstance(entry, dict):
        raise OntologyError(f"{where}: expected a mapping {{id, name, ...}}, got {entry!r}")
    unknown = set(entry) - {"id", "name", "key", "thing", "moving_id", "kitti"}
    if unknown:
        raise OntologyError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise OntologyError(f"{where}: name must be a non-empty string (<= 64 characters)")
    key = entry.get("key", "")
    key = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
    if not isinstance(key, str) or len(key) > 1 or key.lower() in RESERVED_KEYS and key:
        raise OntologyError(f"{where} ({name}): key must be one character other than the "
                            f"page's own ({''.join(sorted(RESERVED_KEYS)).strip()}), "
                            f"got {entry.get('key')!r}")
    thing = entry.get("thing", False)
    if not isinstance(thing, bool):
        raise OntologyError(f"{where} ({name}): thing must be true or false")
    moving = entry.get("moving_id")
    kitti = entry.get("kitti", "Misc")
    if kitti not in KITTI_TYPES:
        raise OntologyError(f"{where} ({name}): kitti must be one of {list(KITTI_TYPES)}")
    return OntologyClass(_class_id(entry.get("id"), f"{where} ({name})", high), name, key,
                         thing, None if moving is None else _class_id(
                             moving, f"{where} ({name}) moving_id", high), kitti)


def _parse_attribute(entry, where: str, names: set[str]) -> OntologyAttribute:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise OntologyError(f"{where}: expected a mapping {{name, values, default, classes}}")
    values = entry.get("values")
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (str, bool)) for v in values) or len(set(map(repr, values))) != len(
            values):
        raise OntologyError(f"{where} ({entry['name']}): values must be a non-empty list of "
                            "distinct strings or booleans")
    default = entry.get("default", values[0])
    if default not in values:
        raise OntologyError(f"{where} ({entry['name']}): default {default!r} not in {values}")
    classes = entry.get("classes", [])
    if not isinstance(classes, list) or not set(classes) <= names:
        raise OntologyError(f"{where} ({entry['name']}): classes must name classes of the "
                            f"ontology; unknown: {sorted(set(classes) - names)}")
    return OntologyAttribute(entry["name"], tuple(values), default, tuple(classes))


def load_ontology(path: str | os.PathLike | None = None) -> Ontology:
    """Read and check an ontology YAML (None: the shipped SemanticKITTI one).

    Raises:
        OntologyError: unreadable file, not YAML, or an entry that breaks a rule (duplicate
            id, name or key, an id out of range for the format, ...).
    """
    import yaml

    path = Path(path) if path is not None else default_ontology_path()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise OntologyError(f"ontology {path}: cannot read it: {error}") from None
    except yaml.YAMLError as error:
        raise OntologyError(f"ontology {path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise OntologyError(f"ontology {path}: expected a mapping with name, format, classes")
    where = f"ontology {path}"
    fmt = data.get("format", "semantickitti")
    if fmt not in ONTOLOGY_FORMATS:
        raise OntologyError(f"{where}: format must be one of {list(ONTOLOGY_FORMATS)}, "
                            f"got {fmt!r}")
    high = 0xFF if fmt == "nuscenes" else 0xFFFF  # a lidarseg .bin holds one byte per point
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise OntologyError(f"{where}: classes must be a non-empty list")
    classes = tuple(_parse_class(e, f"{where}: classes[{i}]", high)
                    for i, e in enumerate(entries))
    for attribute in ("id", "name", "key"):
        values = [getattr(c, attribute) for c in classes if getattr(c, attribute) != ""]
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise OntologyError(f"{where}: repeated class {attribute}: {repeated}")
    names = {c.name for c in classes}
    unassigned = _class_id(data.get("unassigned", 0), f"{where}: unassigned", high)
    default_class = data.get("default_class", next((c.name for c in classes if c.thing),
                                                   classes[0].name))
    if default_class not in names:
        raise OntologyError(f"{where}: default_class {default_class!r} is not a class")
    attributes = tuple(_parse_attribute(e, f"{where}: attributes[{i}]", names)
                       for i, e in enumerate(data.get("attributes") or []))
    return Ontology(str(data.get("name", path.stem)), fmt, unassigned, default_class, classes,
                    attributes, str(path.resolve()))

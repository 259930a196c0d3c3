"""The node's parameters: one table of (name, default, description, constraints) + validation.

``PARAMETERS`` drives declaration (with ``ParameterDescriptor`` ranges that rclpy enforces
itself), the set-parameters callback (:func:`validate`, which returns a human-readable reason)
and ``config/segment.yaml``. Read-only parameters need a node restart.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from npiseg_ros.core.types import MAX_OBJECT_ID

__all__ = ["ParamSpec", "PARAMETERS", "NodeSettings", "descriptor", "validate", "MAX_OBJECT_ID"]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default, a one-line description and its constraints."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "auto", "Model checkpoint (.safetensors): auto = the one shipped "
              "with the package; a relative path is tried from the working directory, then "
              "the package share folder. None found: the node stops and lists the paths "
              "tried", read_only=True),
    ParamSpec("rgb_checkpoint", "auto", "Model for clouds whose colours carry colour (RGB-D "
              "rooms; grey or zero colours do not count): auto = the shipped RGB-cloud model when "
              "checkpoint is auto and it is installed, else none; empty = the checkpoint model "
              "for every cloud; or a .safetensors path (looked up like checkpoint)",
              read_only=True),
    ParamSpec("allow_untrained", False, "Tests only: when no checkpoint is found, run an "
              "UNTRAINED model_preset model (meaningless labels) instead of stopping",
              read_only=True),
    ParamSpec("model_preset", "tiny", "Preset of the untrained model (allow_untrained)",
              read_only=True),
    ParamSpec("device", "auto", "Torch device: auto (CUDA when present), cpu, cuda, cuda:N",
              read_only=True),
    ParamSpec("voxel_size", 0.0, "Voxel edge, metres; 0 keeps each checkpoint's (the network "
              "was trained at it; the colour-cloud model may have its own)", read_only=True,
              minimum=0.0, maximum=1.0),
    ParamSpec("cloud_topic", "points", "PointCloud2 input topic; a relative name is taken in "
              "the node's namespace (/points without one)", read_only=True),
    ParamSpec("qos_reliability", "best_effort", "Reliability of the cloud subscription: "
              "best_effort receives from sensor drivers (best effort) and reliable publishers "
              "alike; reliable receives from reliable publishers only",
              read_only=True, choices=("best_effort", "reliable")),
    ParamSpec("qos_depth", 2, "Queue depth of the cloud subscription", read_only=True,
              minimum=1, maximum=100),
    ParamSpec("num_samples", 10, "Monte-Carlo samples of the latent variables per decode (S)",
              minimum=1, maximum=100),
    ParamSpec("scene_weight", 0.1, "Scene-latent weight alpha in the object latent (paper "
              "Eq. 7)", minimum=0.0, maximum=1.0),
    ParamSpec("seed", 0, "Seed of the Monte-Carlo sampling (same inputs give same outputs)",
              read_only=True, minimum=0, maximum=2**31 - 1),
    ParamSpec("cloud_policy", "latch", "latch: keep annotating the first cloud until reset; "
              "follow: switch to every new cloud and re-apply the clicks",
              choices=("latch", "follow")),
    ParamSpec("max_points", 2_000_000, "Clouds with more points are rejected",
              minimum=1, maximum=50_000_000),
    ParamSpec("max_click_distance", 0.5, "Clicks farther than this from every point are "
              "rejected, metres", minimum=0.001, maximum=100.0),
    ParamSpec("active_object", 1, "Object id given to /clicked_point clicks (0 = background)",
              minimum=0, maximum=MAX_OBJECT_ID),
    ParamSpec("output_directory", "~/.ros/npiseg_ros", "The only directory the node writes "
              "to: autosave and ~/save_annotation paths must lie inside it (relative ones are "
              "taken under it)", read_only=True),
    ParamSpec("autosave_directory", "~/.ros/npiseg_ros", "Where the annotation is saved after "
              "every click, inside output_directory (relative: under it; empty: no autosave)"),
    ParamSpec("resume", True, "Resume the autosaved annotation of a cloud seen before"),
    ParamSpec("transform_timeout", 0.2, "How long to wait for a tf2 transform of a click "
              "(at the stamp of the cloud it was made on) or of a sweep's pose, seconds",
              minimum=0.0, maximum=10.0),
    ParamSpec("fixed_frame", "odom", "Follow mode: the frame the clicks are kept in and the "
              "ego motion between sweeps is taken through (tf at each sweep's stamp)",
              read_only=True),
    ParamSpec("ego_fallback", "align", "Follow mode, when tf gives no pose for a sweep: align "
              "(estimate the ego motion by aligning the sweeps) or static (the sensor does not "
              "move)", choices=("align", "static")),
    ParamSpec("save_every", "never", "When the labels are written without a request (to "
              "labels/ of the autosave directory): never, clicks (every save_every_clicks "
              "clicks) or cloud (the labels of a cloud when it is left; follow: every encode)",
              choices=("never", "clicks", "cloud")),
    ParamSpec("save_every_clicks", 10, "Clicks between two label saves (save_every: clicks)",
              minimum=1, maximum=100_000),
    ParamSpec("save_format", "npz", "Format of the labels save_every writes",
              choices=("npz", "ply", "label")),
    ParamSpec("max_output_mb", 1000.0, "Cap on the files the node writes into "
              "output_directory, MB (10^6 bytes): its oldest own files are removed first, "
              "never anything else; 0 = no cap", read_only=True, minimum=0.0,
              maximum=1.0e9),
)

_SPECS = {spec.name: spec for spec in PARAMETERS}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """ParameterDescriptor for ``spec``, with the numeric range rclpy checks on every set."""
    text = spec.description
    if spec.choices:
        text += f" (one of: {', '.join(spec.choices)})"
    result = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.minimum is not None and isinstance(spec.default, bool) is False:
        if isinstance(spec.default, int):
            result.integer_range = [IntegerRange(
                from_value=int(spec.minimum), to_value=int(spec.maximum), step=0)]
        elif isinstance(spec.default, float):
            result.floating_point_range = [FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    return result


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``, or None when it is.

    Types are checked by rclpy (a parameter keeps its declared type); this checks choices and
    ranges so the rejection reason names the parameter and the allowed values.
    """
    spec = _SPECS.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.minimum is not None and isinstance(value, (int, float)) and not (
            spec.minimum <= value <= spec.maximum):
        return f"{name} must be in [{spec.minimum}, {spec.maximum}], got {value!r}"
    if name == "device" and not _is_device(value):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    return None


def _is_device(value: str) -> bool:
    if value in ("auto", "cpu", "cuda"):
        return True
    return value.startswith("cuda:") and value[5:].isdigit()


@dataclass(frozen=True)
class NodeSettings:
    """Typed snapshot of every parameter (see ``PARAMETERS`` for meanings and units)."""

    checkpoint: str
    rgb_checkpoint: str
    allow_untrained: bool
    model_preset: str
    device: str
    voxel_size: float
    cloud_topic: str
    qos_reliability: str
    qos_depth: int
    num_samples: int
    scene_weight: float
    seed: int
    cloud_policy: str
    max_points: int
    max_click_distance: float
    active_object: int
    output_directory: str
    autosave_directory: str
    resume: bool
    transform_timeout: float
    fixed_frame: str
    ego_fallback: str
    save_every: str
    save_every_clicks: int
    save_format: str
    max_output_mb: float

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> "NodeSettings":
        """Build from ``{name: value}``; missing names take their default."""
        return cls(**{f.name: values.get(f.name, _SPECS[f.name].default) for f in fields(cls)})

    def replace(self, **changes: Any) -> "NodeSettings":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return NodeSettings(**values)

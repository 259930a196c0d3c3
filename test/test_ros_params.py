"""Parameter table, validation, shipped config and launch/build files agree (no ROS graph)."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

try:
    from npiseg_ros.ros import params
except ImportError:  # pragma: no cover
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]


def test_table_settings_and_shipped_yaml_agree():
    names = [spec.name for spec in params.PARAMETERS]
    assert len(names) == len(set(names))
    assert names == [f.name for f in dataclasses.fields(params.NodeSettings)]
    shipped = yaml.safe_load((ROOT / "config" / "segment.yaml").read_text())
    values = shipped["/**"]["ros__parameters"]
    assert sorted(values) == sorted(names)
    for spec in params.PARAMETERS:
        assert type(values[spec.name]) is type(spec.default), spec.name
        assert params.validate(spec.name, values[spec.name]) is None, spec.name
        assert params.validate(spec.name, spec.default) is None, spec.name


@pytest.mark.parametrize("name, value, reason", [
    ("cloud_policy", "sometimes", "one of latch, follow"),
    ("qos_reliability", "fast", "one of reliable, best_effort"),
    ("num_samples", 0, "in [1, 100]"),
    ("scene_weight", 1.5, "in [0.0, 1.0]"),
    ("device", "tpu", "auto, cpu, cuda or cuda:N"),
    ("active_object", 70000, "in [0, 65535]"),
])
def test_validate_gives_a_reason(name, value, reason):
    assert reason in params.validate(name, value)


def test_valid_values_pass_and_unknown_names_are_not_ours():
    assert params.validate("device", "cuda:1") is None
    assert params.validate("use_sim_time", True) is None


def test_descriptors_carry_ranges_and_read_only():
    specs = {spec.name: spec for spec in params.PARAMETERS}
    samples = params.descriptor(specs["num_samples"])
    assert samples.integer_range[0].from_value == 1 and not samples.read_only
    weight = params.descriptor(specs["scene_weight"])
    assert weight.floating_point_range[0].to_value == 1.0
    assert params.descriptor(specs["checkpoint"]).read_only
    assert "latch" in params.descriptor(specs["cloud_policy"]).description


def test_launch_file_uses_installed_executable_and_config():
    launch = (ROOT / "launch" / "segment.launch.py").read_text()
    ast.parse(launch)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert '"segment_node:npiseg_ros.ros.node"' in cmake
    assert 'executable="segment_node"' in launch
    for name in ("segment.yaml", "fastdds_shm.xml", "npiseg.rviz"):
        assert f'"{name}"' in launch and (ROOT / "config" / name).is_file()
    assert "install(DIRECTORY launch config" in cmake


def _load_launch_with_stand_ins(monkeypatch):
    """Execute launch/segment.launch.py against minimal stand-ins of launch / launch_ros (they
    have no PyPI wheels): records what it builds, so the argument handling can be checked."""
    import sys
    import types

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration(Recorded):
        def perform(self, context):
            return context[self.args[0]]

    modules = {
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.SimpleNamespace(
            get_package_share_directory=lambda name: f"/share/{name}"),
        "launch": types.SimpleNamespace(LaunchDescription=Recorded),
        "launch.actions": types.SimpleNamespace(
            DeclareLaunchArgument=Recorded, OpaqueFunction=Recorded,
            SetEnvironmentVariable=Recorded),
        "launch.conditions": types.SimpleNamespace(IfCondition=Recorded),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros": types.ModuleType("launch_ros"),
        "launch_ros.actions": types.SimpleNamespace(Node=Recorded),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = {}
    exec(compile((ROOT / "launch" / "segment.launch.py").read_text(), "launch", "exec"),
         namespace)
    return namespace["generate_launch_description"]()


def test_launch_overrides_only_the_given_arguments(monkeypatch):
    description = _load_launch_with_stand_ins(monkeypatch)
    actions = description.args[0]
    arguments = {a.args[0]: a.kwargs["default_value"] for a in actions
                 if "default_value" in a.kwargs}
    assert arguments["params_file"] == "/share/npiseg_ros/config/segment.yaml"
    assert arguments["fastdds_profile"] == "/share/npiseg_ros/config/fastdds_shm.xml"
    opaque = next(a for a in actions if "function" in a.kwargs)
    context = {"params_file": "p.yaml", "checkpoint": "", "cloud_topic": ""}
    node = opaque.kwargs["function"](context)[0]
    assert node.kwargs["parameters"] == ["p.yaml"]
    assert node.kwargs["executable"] == "segment_node" and node.kwargs["name"] == "npiseg"
    context.update(checkpoint="m.safetensors")
    node = opaque.kwargs["function"](context)[0]
    assert node.kwargs["parameters"] == ["p.yaml", {"checkpoint": "m.safetensors"}]

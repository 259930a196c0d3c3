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
    ("qos_reliability", "fast", "one of best_effort, reliable"),
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
    assert 'executable="segment_node"' in launch
    for name in ("segment.yaml", "fastdds_shm.xml", "npiseg.rviz"):
        assert f'"{name}"' in launch and (ROOT / "config" / name).is_file()
    assert "install(DIRECTORY launch config" in cmake
    assert "checkpoints/*.safetensors" in cmake
    # Installed with install(PROGRAMS) from real executable files, so that a symlink install
    # links to an executable too (file(GENERATE) wrote mode 644 files).
    assert "install(PROGRAMS bin/segment_node bin/segment_demo bin/segment_demo_user" in cmake
    assert "file(GENERATE" not in cmake
    for name, module in (("segment_node", "npiseg_ros.ros.node_main"),
                         ("segment_demo", "npiseg_ros.ros.demo"),
                         ("segment_demo_user", "npiseg_ros.ros.demo_user")):
        script = ROOT / "bin" / name
        assert script.stat().st_mode & 0o111 == 0o111, f"bin/{name} is not executable"
        text = script.read_text()
        assert f"from {module} import main" in text, name
        # segment_node: a shell that starts Python with SIGINT / SIGTERM blocked (node_main)
        shebang = "#!/bin/sh\n" if name == "segment_node" else "#!/usr/bin/env python3\n"
        assert text.startswith(shebang), name


def _load_launch_with_stand_ins(monkeypatch, rviz_prefix: str | None = None):
    """Execute launch/segment.launch.py against minimal stand-ins of launch / launch_ros (they
    have no PyPI wheels): records what it builds, so the argument handling can be checked.
    ``rviz_prefix``: where the ament index finds rviz2 (None: not installed)."""
    import sys
    import types

    class Recorded:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration(Recorded):
        def perform(self, context):
            return context[self.args[0]]

    class PackageNotFoundError(KeyError):
        pass

    def get_package_prefix(name):
        if name == "rviz2" and rviz_prefix is not None:
            return rviz_prefix
        raise PackageNotFoundError(name)

    modules = {
        "ament_index_python": types.ModuleType("ament_index_python"),
        "ament_index_python.packages": types.SimpleNamespace(
            get_package_share_directory=lambda name: f"/share/{name}",
            get_package_prefix=get_package_prefix, PackageNotFoundError=PackageNotFoundError),
        "launch": types.SimpleNamespace(LaunchDescription=Recorded),
        "launch.actions": types.SimpleNamespace(
            DeclareLaunchArgument=Recorded, OpaqueFunction=Recorded, LogInfo=Recorded,
            SetEnvironmentVariable=Recorded, Shutdown=Recorded),
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


LAUNCH_CONTEXT = {"params_file": "p.yaml", "namespace": "", "clicked_point_topic": "",
                  "checkpoint": "", "cloud_topic": "",
                  "qos_reliability": "", "device": "", "cloud_policy": "", "rviz": "false"}


def _launch_actions(monkeypatch, rviz_prefix=None, **arguments):
    description = _load_launch_with_stand_ins(monkeypatch, rviz_prefix)
    opaque = next(a for a in description.args[0] if "function" in a.kwargs)
    return opaque.kwargs["function"]({**LAUNCH_CONTEXT, **arguments})


def test_launch_overrides_only_the_given_arguments(monkeypatch):
    description = _load_launch_with_stand_ins(monkeypatch)
    actions = description.args[0]
    arguments = {a.args[0]: a.kwargs["default_value"] for a in actions
                 if "default_value" in a.kwargs}
    assert arguments["params_file"] == "/share/npiseg_ros/config/segment.yaml"
    assert arguments["fastdds_profile"] == "/share/npiseg_ros/config/fastdds_shm.xml"
    # The parameters users change often are launch arguments, each naming a real parameter.
    often = ("cloud_topic", "qos_reliability", "checkpoint", "device", "cloud_policy")
    names = {spec.name for spec in params.PARAMETERS}
    for name in often:
        assert arguments[name] == "" and name in names, name
    assert arguments["rviz"] == "false"
    node = _launch_actions(monkeypatch)[0]
    assert node.kwargs["parameters"] == ["p.yaml"]
    assert node.kwargs["executable"] == "segment_node" and node.kwargs["name"] == "npiseg"
    # The launch ends with the node (an error at start, Ctrl-C): nothing is left running.
    assert "on_exit" in node.kwargs
    # OpenMP threads sleep while they wait unless the user's environment says otherwise
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    assert _launch_actions(monkeypatch)[0].kwargs["additional_env"] == {
        "OMP_WAIT_POLICY": "PASSIVE"}
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "3000")):
        with monkeypatch.context() as environment:
            environment.setenv(name, value)
            assert "additional_env" not in _launch_actions(monkeypatch)[0].kwargs, name
    node = _launch_actions(monkeypatch, checkpoint="m.safetensors",
                           qos_reliability="reliable", cloud_topic="/velodyne_points")[0]
    assert node.kwargs["parameters"] == ["p.yaml", {
        "checkpoint": "m.safetensors", "qos_reliability": "reliable",
        "cloud_topic": "/velodyne_points"}]


def test_launch_namespace_moves_the_node_and_remaps_clicks_only_when_asked(monkeypatch):
    node = _launch_actions(monkeypatch)[0]
    assert node.kwargs["namespace"] == "" and node.kwargs["remappings"] == []
    node = _launch_actions(monkeypatch, namespace="/lidar")[0]
    assert node.kwargs["namespace"] == "/lidar" and node.kwargs["remappings"] == []
    node = _launch_actions(monkeypatch, namespace="/lidar",
                           clicked_point_topic="/clicked_point")[0]
    assert node.kwargs["remappings"] == [("clicked_point", "/clicked_point")]
    # the shipped topic is relative, so the namespace moves it too
    assert not params.NodeSettings.from_values({}).cloud_topic.startswith("/")


class _Exited:
    """launch's ProcessExited event, as far as the launch file reads it."""

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode


@pytest.mark.parametrize("code", [2, 1, -9])
def test_launch_fails_when_the_node_fails(monkeypatch, code):
    """A node that exits non-zero (2: bad checkpoint) makes the launch fail: launch's
    LaunchService returns 1 when an event handler raises, and 0 after a Shutdown action
    (before: ``ros2 launch`` returned 0 after the node's exit 2)."""
    on_exit = _launch_actions(monkeypatch)[0].kwargs["on_exit"]
    with pytest.raises(RuntimeError, match=f"exited with code {code}"):
        on_exit(_Exited(code), context=None)


def test_launch_ends_quietly_with_a_node_that_exits_0(monkeypatch):
    on_exit = _launch_actions(monkeypatch)[0].kwargs["on_exit"]
    actions = on_exit(_Exited(0), context=None)
    assert len(actions) == 1 and actions[0].kwargs["reason"] == "segment_node ended"


@pytest.mark.parametrize("terminal", [True, False])
def test_launch_emulates_a_tty_only_on_a_terminal(monkeypatch, terminal):
    """A launch log written to a file had colour codes (emulate_tty always on)."""
    class Output:
        def isatty(self) -> bool:
            return terminal
    monkeypatch.setattr("sys.stdout", Output())
    assert _launch_actions(monkeypatch)[0].kwargs["emulate_tty"] is terminal


def test_launch_rviz_only_when_rviz2_is_installed(monkeypatch, tmp_path):
    """rviz:=true without rviz2: a message and the node alone (before: a Node action for a
    missing package, which aborted the launch and left segment_node running)."""
    actions = _launch_actions(monkeypatch, rviz="true")
    assert [a.kwargs.get("package") for a in actions] == ["npiseg_ros", None]
    assert "rviz2 is not installed" in actions[1].kwargs["msg"]
    executable = tmp_path / "lib" / "rviz2" / "rviz2"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    actions = _launch_actions(monkeypatch, rviz_prefix=str(tmp_path), rviz="true")
    assert [a.kwargs.get("package") for a in actions] == ["npiseg_ros", "rviz2"]
    assert actions[1].kwargs["arguments"] == ["-d", "/share/npiseg_ros/config/npiseg.rviz"]
    assert len(_launch_actions(monkeypatch, rviz_prefix=str(tmp_path))) == 1  # rviz:=false

"""Which model the node loads: ``checkpoint: auto`` in every install layout, relative paths,
and a stop with the paths tried when there is none (an untrained model only on request).
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from npiseg_ros import resources
from npiseg_ros.core import router  # where the checkpoint rules look for shipped files
from npiseg_ros.core.errors import CheckpointError

try:
    from npiseg_ros.ros.session_factory import resolve_checkpoint
    from npiseg_ros.ros.testing import domain_for, ros_test_context, start_test_node
except ImportError:  # pragma: no cover - depends on the machine
    pytest.skip("rclpy not installed (run scripts/setup.sh)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SITE = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"


def _resources_installed_at(prefix: Path):
    """npiseg_ros/resources.py as installed under ``prefix`` (colcon install space, pip into a
    venv): a copy imported from <prefix>/lib/pythonX.Y/site-packages/npiseg_ros."""
    module_path = prefix / SITE / "npiseg_ros" / "resources.py"
    module_path.parent.mkdir(parents=True)
    shutil.copy(ROOT / "npiseg_ros" / "resources.py", module_path)
    spec = importlib.util.spec_from_file_location("installed_resources", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_checkpoint_is_found_from_the_checkout():
    found = resources.shipped_checkpoint()
    assert found and Path(found).is_file() and Path(found).parent == ROOT / "checkpoints"
    assert resolve_checkpoint("auto") == Path(found)


def test_auto_finds_the_checkpoint_in_an_install_prefix(tmp_path):
    """colcon (plain install) and pip put the module in <prefix>/lib/pythonX.Y/site-packages
    and the checkpoint in <prefix>/share/npiseg_ros/checkpoints; no ament index needed."""
    prefix = tmp_path / "install" / "npiseg_ros"
    installed = _resources_installed_at(prefix)
    shipped = prefix / "share" / "npiseg_ros" / "checkpoints" / "model.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"x")
    assert prefix / "share" / "npiseg_ros" / "checkpoints" in installed.share_candidates(
        "checkpoints")
    assert installed.shipped_checkpoint() == str(shipped)


def test_symlink_install_resolves_to_the_source_checkout(tmp_path):
    """colcon --symlink-install: the installed module is a link to the source file, whose
    package root (the checkout) holds checkpoints/."""
    source = tmp_path / "src" / "npiseg_ros"
    (source / "npiseg_ros").mkdir(parents=True)
    shutil.copy(ROOT / "npiseg_ros" / "resources.py", source / "npiseg_ros" / "resources.py")
    (source / "checkpoints").mkdir()
    (source / "checkpoints" / "model.safetensors").write_bytes(b"x")
    link = tmp_path / "install" / "npiseg_ros" / SITE / "npiseg_ros" / "resources.py"
    link.parent.mkdir(parents=True)
    link.symlink_to(source / "npiseg_ros" / "resources.py")
    spec = importlib.util.spec_from_file_location("linked_resources", link)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.shipped_checkpoint() == str(source / "checkpoints" / "model.safetensors")


def _no_shipped_checkpoint(monkeypatch, tmp_path):
    share = tmp_path / "share" / "npiseg_ros"
    monkeypatch.setattr(router, "shipped_checkpoint", lambda: "")
    monkeypatch.setattr(router, "share_candidates",
                        lambda relative: [tmp_path / "checkout" / relative, share / relative])
    return share


def test_auto_without_a_shipped_checkpoint_stops_with_the_places_looked(monkeypatch, tmp_path):
    """Before: an UNTRAINED model with a warning, and meaningless labels published."""
    share = _no_shipped_checkpoint(monkeypatch, tmp_path)
    with pytest.raises(CheckpointError) as error:
        resolve_checkpoint("auto")
    message = str(error.value)
    assert str(share / "checkpoints" / "*.safetensors") in message
    assert str(tmp_path / "checkout" / "checkpoints" / "*.safetensors") in message
    assert "allow_untrained" in message
    assert resolve_checkpoint("auto", allow_untrained=True) is None


def test_relative_checkpoint_tries_cwd_then_share(monkeypatch, tmp_path):
    share = _no_shipped_checkpoint(monkeypatch, tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    in_share = share / "checkpoints" / "m.safetensors"
    in_share.parent.mkdir(parents=True)
    in_share.write_bytes(b"x")
    assert resolve_checkpoint("checkpoints/m.safetensors", cwd=cwd) == in_share
    (cwd / "checkpoints").mkdir()
    (cwd / "checkpoints" / "m.safetensors").write_bytes(b"x")  # cwd wins
    assert resolve_checkpoint("checkpoints/m.safetensors", cwd=cwd) == (
        cwd / "checkpoints" / "m.safetensors")
    with pytest.raises(CheckpointError) as error:
        resolve_checkpoint("checkpoints/other.safetensors", cwd=cwd)
    message = str(error.value)
    for tried in (cwd / "checkpoints/other.safetensors", share / "checkpoints/other.safetensors",
                  tmp_path / "checkout" / "checkpoints/other.safetensors"):
        assert str(tried) in message, message
    absolute = tmp_path / "absent.safetensors"
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        resolve_checkpoint(str(absolute))


def test_empty_checkpoint_needs_allow_untrained():
    with pytest.raises(CheckpointError, match="allow_untrained"):
        resolve_checkpoint("")
    assert resolve_checkpoint("", allow_untrained=True) is None


@pytest.mark.parametrize("parameters, expected", [
    ({"checkpoint": "checkpoints/missing.safetensors"}, "missing.safetensors' not found; tried"),
    ({"checkpoint": ""}, "no checkpoint given"),
    ({"qos_reliability": "besteffort"}, "qos_reliability must be one of"),
], ids=["missing relative checkpoint", "empty checkpoint", "bad launch value"])
def test_node_process_stops_with_the_reason(tmp_path, parameters, expected):
    """The real node: exit code 2 and the reason (with the paths tried) instead of running an
    untrained model or a silently wrong QoS."""
    domain = domain_for(__name__)
    with ros_test_context(domain):
        parameters = {"checkpoint": "unused.safetensors", **parameters}
        process = start_test_node(tmp_path, parameters.pop("checkpoint"), domain, **parameters)
        try:
            code = process.wait(120)
        finally:
            if process.poll() is None:
                process.kill()
    log = (tmp_path / "node.log").read_text(errors="replace")
    assert code == 2, log[-3000:]
    assert "npiseg node cannot start" in log and expected in log, log[-3000:]
    assert "Traceback" not in log
    if "missing" in expected:
        assert str(ROOT / "checkpoints" / "missing.safetensors") in log  # a place tried


def test_rgb_checkpoint_auto_pairs_with_checkpoint_auto_only(monkeypatch, tmp_path):
    """``rgb_checkpoint: auto`` adds the shipped indoor model only when the node also runs the
    shipped default (``checkpoint: auto``); empty = none; a missing file is an error."""
    from npiseg_ros.ros.session_factory import resolve_rgb_checkpoint

    indoor = tmp_path / "indoor.safetensors"
    indoor.write_bytes(b"x")
    monkeypatch.setattr(router, "shipped_rgb_checkpoint", lambda: str(indoor))
    assert resolve_rgb_checkpoint("auto", "auto") == indoor
    assert resolve_rgb_checkpoint("auto", "mine.safetensors") is None
    assert resolve_rgb_checkpoint("", "auto") is None
    assert resolve_rgb_checkpoint(str(indoor), "mine.safetensors") == indoor
    with pytest.raises(CheckpointError, match="rgb_checkpoint"):
        resolve_rgb_checkpoint(str(tmp_path / "missing.safetensors"), "auto")
    monkeypatch.setattr(router, "shipped_rgb_checkpoint", lambda: "")
    assert resolve_rgb_checkpoint("auto", "auto") is None


def test_the_rgb_model_is_never_the_default_checkpoint(tmp_path):
    """With only the indoor model installed, ``auto`` must not silently run it on sweeps."""
    prefix = tmp_path / "prefix"
    installed = _resources_installed_at(prefix)
    folder = prefix / "share" / "npiseg_ros" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / installed.RGB_CHECKPOINT).write_bytes(b"x")
    assert installed.shipped_checkpoint() == ""
    assert installed.shipped_rgb_checkpoint() == str(folder / installed.RGB_CHECKPOINT)
    (folder / "model.safetensors").write_bytes(b"x")
    assert installed.shipped_checkpoint() == str(folder / "model.safetensors")

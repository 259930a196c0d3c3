"""Start the node (and the demo user) as separate OS processes talking over real DDS.

Used by the demo and the tests, where ``ros2 launch`` is not available. The environment keeps
DDS traffic on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``), isolates runs by
``ROS_DOMAIN_ID`` and loads the shared-memory Fast DDS profile so large clouds arrive.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from npiseg_ros.resources import PACKAGE_ROOT, share_path, shipped_checkpoint

__all__ = ["PACKAGE_ROOT", "FASTDDS_PROFILE", "SEGMENT_NODE", "share_path",
           "shipped_checkpoint", "ros_environment", "start_module", "start_segment_node",
           "stop_process"]

FASTDDS_PROFILE = share_path("config/fastdds_shm.xml")
SEGMENT_NODE = PACKAGE_ROOT / "bin" / "segment_node"
"""The node's installed executable (what ``ros2 run`` / ``ros2 launch`` start), in the checkout."""


def ros_environment(domain_id: int, profile: Path | None = FASTDDS_PROFILE,
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a ROS process: given domain, localhost-only discovery, DDS profile.

    The package root is put first on PYTHONPATH so a source checkout's code is what runs.
    """
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if profile is not None and Path(profile).is_file():
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    # ROS log lines go to stderr; keep them readable in captured logs.
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def start_module(module: str, args: list[str], env: dict[str, str],
                 log_path: Path | None = None) -> subprocess.Popen:
    """``python -m module args...`` in a new session; output to ``log_path`` (None: ours)."""
    return _start([sys.executable, "-m", module, *args], env, log_path)


def start_segment_node(args: list[str], env: dict[str, str],
                       log_path: Path | None = None) -> subprocess.Popen:
    """``bin/segment_node args...`` (the node as ``ros2 launch`` starts it: shutdown signals
    blocked before Python starts) with this interpreter as its ``python3``; in a new session,
    output to ``log_path`` (None: ours)."""
    env = dict(env)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return _start([str(SEGMENT_NODE), *args], env, log_path)


def _start(command: list[str], env: dict[str, str], log_path: Path | None) -> subprocess.Popen:
    output = open(log_path, "ab") if log_path is not None else None
    try:
        return subprocess.Popen(command, env=env, stdout=output,
                                stderr=subprocess.STDOUT if output else None,
                                start_new_session=True)
    finally:
        if output is not None:
            output.close()


def stop_process(process: subprocess.Popen, timeout_s: float = 15.0) -> int | None:
    """SIGINT (clean ROS shutdown), then SIGKILL if it does not exit in ``timeout_s``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
    return process.returncode

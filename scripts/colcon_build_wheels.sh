#!/usr/bin/env bash
# `colcon build` of this package against the ROS 2 PyPI wheels in a virtual environment, for
# machines without a ROS installation (CI, these machines). With a ROS installation you do not
# need this: `source /opt/ros/<distro>/setup.bash && colcon build` does the same.
#
# Usage: scripts/colcon_build_wheels.sh WORKSPACE [colcon build arguments...]
#   e.g. scripts/colcon_build_wheels.sh /tmp/ws --symlink-install
# WORKSPACE/src must hold the package (a clone or a copy of this repository). The venv is
# $VENV (default <repo>/.venv) and must have been prepared by scripts/setup.sh (wheels
# installed, their *.cmake include paths fixed) with colcon-common-extensions.
#
# The wheels stand in for /opt/ros/<distro>: their prefix is the venv, so the venv goes into
# AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH, and the linker is told where the wheels' shared
# libraries are (see scripts/build_interfaces.sh and ../shared/reference/ros2-here.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${VENV:-$REPO/.venv}" && pwd)"
WS="$(cd "${1:?usage: colcon_build_wheels.sh WORKSPACE [colcon build args]}" && pwd)"
shift

[ -x "$VENV/bin/colcon" ] || { echo "error: no colcon in $VENV (run scripts/setup.sh)" >&2; exit 2; }
LINK_DIRS="$VENV/lib$(find "$VENV/lib" -maxdepth 3 -type d -name 'ros_*.libs' -printf ':%p' 2>/dev/null || true)"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$LINK_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cd "$WS"
exec colcon build "$@" --cmake-args \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DPython3_FIND_VIRTUALENV=ONLY -DBUILD_TESTING=OFF \
  "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,${LINK_DIRS//:/ -Wl,-rpath-link,}"

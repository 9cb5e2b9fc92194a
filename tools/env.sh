# Source me: `source tools/env.sh` (bash). The Makefile targets source it too.
# Activates the project venv, sources the colcon install (vpr_ros with its messages),
# and sets the runtime environment. Run tools/setup_env.sh (make setup) first.
# Does not use `set -e`/`set -u`: it runs in the caller's shell.

_vpr_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$_vpr_repo/.venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac

if [[ ! -f "$VENV/bin/activate" ]]; then
  echo "tools/env.sh: no venv at $VENV; run tools/setup_env.sh (make setup) first" >&2
  return 1 2>/dev/null || exit 1
fi

VPR_ROS_MODE=pip
VPR_ROS_DISTRO=
# shellcheck disable=SC1091
[[ -f "$VENV/.vpr_ros_env" ]] && source "$VENV/.vpr_ros_env"
if [[ $VPR_ROS_MODE == system && -z "${ROS_DISTRO:-}" \
      && -f "/opt/ros/$VPR_ROS_DISTRO/setup.bash" ]]; then
  # shellcheck disable=SC1090
  source "/opt/ros/$VPR_ROS_DISTRO/setup.bash"
fi

# shellcheck disable=SC1091
source "$VENV/bin/activate"
# Set by the ros-* wheels' .pth re-exec; a stale one from another venv would skip it.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

if [[ $VPR_ROS_MODE == pip ]]; then
  # ament_index_python (and so the package's share/ lookups) needs the wheels' prefix.
  case ":${AMENT_PREFIX_PATH:-}:" in
    *":$VENV:"*) ;;
    *) export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
  esac
fi

if [[ -f "$_vpr_repo/install/setup.bash" ]]; then
  # shellcheck disable=SC1091
  source "$_vpr_repo/install/setup.bash"
  # The package's executables (demo, evaluate, descriptor_node, ...) by name, as
  # `ros2 run vpr_ros <name>` would find them (there is no ros2 CLI in the pip setup).
  case ":$PATH:" in
    *":$_vpr_repo/install/vpr_ros/lib/vpr_ros:"*) ;;
    *) export PATH="$_vpr_repo/install/vpr_ros/lib/vpr_ros:$PATH" ;;
  esac
else
  echo "tools/env.sh: $_vpr_repo/install/setup.bash missing; run make build" >&2
fi

# 2 cores on the development and CI machines; torch, faiss and OpenCV each bring a
# thread pool (and two libgomp copies load), so cap them. Override by exporting first.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# Idle OpenMP workers sleep instead of spinning: on a busy 2-core machine spinning workers
# made XFeat 1.3 s per keyframe instead of 70 ms (several processes share the cores).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# Fast DDS's default transport is slow for 640x480 images (~13.5 ms one way) and loses
# large BEST_EFFORT messages; LARGE_DATA gives ~3 ms. Do not also set
# ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: it cancels LARGE_DATA.
export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
export VENV
unset _vpr_repo

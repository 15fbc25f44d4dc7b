# Source this file to get a shell with the fleetlanes environment: `source scripts/env.sh`.
# It activates .venv, sets the ROS 2 library path once (so the wheels' bootstrapper does not re-exec every
# Python start), confines DDS discovery to this machine, and overlays the colcon install/ space.
_fl_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
_fl_venv="$_fl_root/.venv"
if [ ! -x "$_fl_venv/bin/python" ]; then
  echo "fleetlanes: $_fl_venv is missing; run 'make setup' first" >&2
  return 1 2>/dev/null || exit 1
fi
export VIRTUAL_ENV="$_fl_venv"
case ":$PATH:" in *":$_fl_venv/bin:"*) ;; *) export PATH="$_fl_venv/bin:$PATH" ;; esac
_fl_libs="$_fl_venv/lib"
for _fl_d in "$_fl_venv"/lib/python3.11/site-packages/ros_*.libs; do
  [ -d "$_fl_d" ] && _fl_libs="$_fl_libs:$_fl_d"
done
case ":${LD_LIBRARY_PATH:-}:" in *":$_fl_venv/lib:"*) ;; *) export LD_LIBRARY_PATH="$_fl_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;; esac
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$_fl_venv"
export CMAKE_PREFIX_PATH="${CMAKE_PREFIX_PATH:+$CMAKE_PREFIX_PATH:}$_fl_venv"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Network rule: DDS discovery never leaves this host unless the caller explicitly says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 101 ))}"
# The ROS 2 launch/ros2cli overlay scripts/setup.sh builds when no ROS 2 install provides them (under this project's
# packages, so they overlay it).
if [ -z "${FLEETLANES_SKIP_INSTALL:-}" ] && [ -f "$_fl_root/.overlay/ros2/install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_fl_root/.overlay/ros2/install/local_setup.bash"
fi
if [ -z "${FLEETLANES_SKIP_INSTALL:-}" ] && [ -f "$_fl_root/install/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  source "$_fl_root/install/local_setup.bash"
  # Console scripts live in install/<pkg>/lib/<pkg> (where `ros2 run` looks); put them on PATH for the pip-only path.
  for _fl_d in "$_fl_root"/install/*/lib/fleet_*; do
    case ":$PATH:" in *":$_fl_d:"*) ;; *) [ -d "$_fl_d" ] && PATH="$_fl_d:$PATH" ;; esac
  done
  export PATH
fi
unset _fl_root _fl_venv _fl_libs _fl_d

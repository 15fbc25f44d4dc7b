#!/usr/bin/env bash
# Runs a command with DDS confined to this host and a ROS_DOMAIN_ID of its own (unless FLEETLANES_DOMAIN_FIXED is
# set). The domain is claimed like the tests claim theirs (fleet_ros.domains: an flock on a per-domain file), and the
# lock is held by the command itself (inherited descriptor), so a bench never shares a domain with a test session.
set -euo pipefail
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
if [ -z "${FLEETLANES_DOMAIN_FIXED:-}" ]; then
  read -r lock_dir first count < <(python -m fleet_ros.domains)
  mkdir -p "$lock_dir"
  claimed=''
  for ((i = 0; i < count; i++)); do
    domain=$((first + ($$ + i) % count))
    exec 9>"$lock_dir/$domain.lock"
    if flock -n 9; then
      claimed=$domain
      break
    fi
  done
  if [ -z "$claimed" ]; then
    echo "run.sh: no free ROS domain id in $first..$((first + count - 1)) (locks in $lock_dir)" >&2
    exit 1
  fi
  export ROS_DOMAIN_ID=$claimed
fi
exec "$@"

#!/usr/bin/env bash
# Runs a command with DDS confined to this host and a ROS_DOMAIN_ID of its own (unless one is given).
set -euo pipefail
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
if [ -z "${FLEETLANES_DOMAIN_FIXED:-}" ]; then
  export ROS_DOMAIN_ID=$(( ($$ % 90) + 10 ))
fi
exec "$@"

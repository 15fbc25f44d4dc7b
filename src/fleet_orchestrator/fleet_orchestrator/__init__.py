"""Per-shard orchestrator lifecycle node: dispatch, leadership with fencing, hot standby."""

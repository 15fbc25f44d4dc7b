"""fleetctl: the operator's command line for a fleetlanes deployment."""

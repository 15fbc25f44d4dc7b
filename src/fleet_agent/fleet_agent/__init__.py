"""Robot-side fleetlanes: idempotent command intake, executor plug-ins, heartbeats."""

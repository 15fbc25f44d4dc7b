"""Simulated-robot tuning (config/sim.yaml, `/**/sim_host: ros__parameters:`), validated once into a dataclass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet_core import yaml_config

KINDS_WITH_FAILURES = ('goto', 'inspect', 'report', 'undock', 'dock')


class SimConfigError(ValueError):
    """A simulator parameter is out of range or of the wrong type; the message names the source and key."""


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Every value a simulated robot needs. Failure rates are probabilities per executed command of that kind."""

    speed_mps: float = 1.5
    undock_sec: float = 0.5
    dock_sec: float = 0.5
    inspect_sec: float = 1.0
    report_sec: float = 0.2
    battery_drain_per_m: float = 0.05
    battery_drain_per_sec: float = 0.02
    battery_charge_per_sec: float = 1.0
    battery_initial_pct: float = 100.0
    failure_rate_goto: float = 0.0
    failure_rate_inspect: float = 0.0
    failure_rate_report: float = 0.0
    failure_rate_undock: float = 0.0
    failure_rate_dock: float = 0.0
    odom_rate_hz: float = 2.0
    seed: int = 1

    def failure_rate(self, kind: str) -> float:
        return float(getattr(self, f'failure_rate_{kind}', 0.0))

    def describe(self, name: str) -> str:
        return _DESCRIPTIONS[name]


_DESCRIPTIONS = {
    'speed_mps': 'driving speed of a simulated robot (m/s)',
    'undock_sec': 'time an undock takes (s)',
    'dock_sec': 'time a dock takes (s)',
    'inspect_sec': 'inspection time when the command gives no duration_sec (s)',
    'report_sec': 'time to upload a report (s)',
    'battery_drain_per_m': 'battery percent used per metre driven',
    'battery_drain_per_sec': 'battery percent used per second of work away from the dock',
    'battery_charge_per_sec': 'battery percent gained per second while docked',
    'battery_initial_pct': 'state of charge at start (0..100)',
    'failure_rate_goto': 'probability that a goto fails (0..1, seeded RNG)',
    'failure_rate_inspect': 'probability that an inspect fails (0..1, seeded RNG)',
    'failure_rate_report': 'probability that a report fails (0..1, seeded RNG)',
    'failure_rate_undock': 'probability that an undock fails (0..1, seeded RNG)',
    'failure_rate_dock': 'probability that a dock fails (0..1, seeded RNG)',
    'odom_rate_hz': 'odometry rate per robot at degradation level 0 (Hz); lower levels scale it down',
    'seed': 'seed of the per-robot failure RNGs (same seed, same failures)',
}


def _check_range(key: str, value: object) -> str | None:
    if not isinstance(value, float):
        return None
    if not math.isfinite(value) or value < 0:
        return f'must be a finite number >= 0, got {value!r}'
    if key.startswith('failure_rate_') and value > 1:
        return f'a probability must be <= 1, got {value!r}'
    if key in ('speed_mps', 'odom_rate_hz') and value == 0:
        return 'must be > 0'
    if key == 'battery_initial_pct' and value > 100:
        return f'must be <= 100, got {value!r}'
    return None


def parse_sim_settings(raw: Mapping[str, Any], source: str = '<parameters>') -> SimSettings:
    """Validate a mapping of parameter name to value (unknown keys are an error)."""
    return yaml_config.build(SimSettings, raw, source, '', SimConfigError, validate=_check_range)

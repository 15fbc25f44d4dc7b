"""Tests for fleet_core.degradation: thresholds, hysteresis, shedding rule and telemetry factors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.degradation import (
    DegradationConfig,
    DegradationConfigError,
    DegradationPolicy,
    may_shed,
    telemetry_rate_factor,
)
from fleet_core.model import Priority

CONFIG = DegradationConfig(
    level1_queue_depth=100, level2_queue_depth=400, level1_ack_p99_ms=200.0, level2_ack_p99_ms=800.0, hold_sec=1.0
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def depth(normal: int = 0, low: int = 0, safety: int = 0) -> dict[Priority, int]:
    return {Priority.LOW: low, Priority.NORMAL: normal, Priority.HIGH: 0, Priority.SAFETY: safety}


def test_levels_rise_immediately_on_either_signal() -> None:
    policy = DegradationPolicy(CONFIG, clock=Clock())
    assert policy.update(depth(normal=99), 10.0) == 0
    assert policy.update(depth(normal=60, low=40), 10.0) == 1
    assert policy.update(depth(), 900.0) == 2
    # SAFETY does not queue behind anything and does not count.
    fresh = DegradationPolicy(CONFIG, clock=Clock())
    assert fresh.update(depth(safety=10_000), math.nan) == 0


def test_hysteresis_steps_down_one_level_after_hold() -> None:
    clock = Clock()
    policy = DegradationPolicy(CONFIG, clock=clock)
    policy.update(depth(normal=500), 0.0)
    assert policy.level == 2
    clock.now = 1.0
    assert policy.update(depth(normal=300), 0.0) == 2  # below level 2 but above 0.7 x 400 = 280: no recovery yet
    clock.now = 2.0
    assert policy.update(depth(normal=250), 0.0) == 2  # calm starts
    clock.now = 2.9
    assert policy.update(depth(normal=250), 0.0) == 2
    clock.now = 3.0
    assert policy.update(depth(normal=250), 0.0) == 1
    clock.now = 3.5
    assert policy.update(depth(normal=90), 0.0) == 1  # 90 > 0.7 x 100: still level 1 territory
    assert policy.update(depth(normal=50), 0.0) == 1
    clock.now = 4.4
    assert policy.update(depth(normal=120), 0.0) == 1  # pressure back: calm resets
    clock.now = 5.0
    assert policy.update(depth(normal=10), 0.0) == 1
    clock.now = 6.0
    assert policy.update(depth(normal=10), 0.0) == 0


def test_only_low_is_shed_and_only_at_level_two() -> None:
    for level in (0, 1, 2):
        for priority in Priority:
            assert may_shed(priority, level) == (priority is Priority.LOW and level == 2)


def test_telemetry_factor_per_level() -> None:
    assert [telemetry_rate_factor(level, CONFIG) for level in (-1, 0, 1, 2, 7)] == [1.0, 1.0, 0.25, 0.05, 0.05]


@pytest.mark.parametrize(
    ('kwargs', 'key'),
    [
        ({'level1_queue_depth': 500, 'level2_queue_depth': 100}, 'level1_queue_depth'),
        ({'level1_ack_p99_ms': 0.0}, 'level1_ack_p99_ms'),
        ({'recover_ratio': 1.0}, 'recover_ratio'),
        ({'hold_sec': -1.0}, 'hold_sec'),
        ({'telemetry_factor': (1.0, 0.5, 0.9)}, 'telemetry_factor'),
        ({'telemetry_factor': (1.0, 0.5)}, 'telemetry_factor'),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(DegradationConfigError, match=key):
        DegradationConfig(**kwargs)  # type: ignore[arg-type]  # invalid values on purpose


@settings(max_examples=200, deadline=None)
@given(samples=st.lists(st.tuples(st.integers(0, 1000), st.floats(0, 2000), st.floats(0, 3)), max_size=50))
def test_level_is_bounded_and_never_below_current_pressure(samples: list[tuple[int, float, float]]) -> None:
    clock = Clock()
    policy = DegradationPolicy(CONFIG, clock=clock)
    previous = 0
    for queued, p99, dt in samples:
        clock.now += dt
        level = policy.update(depth(normal=queued), p99)
        assert 0 <= level <= 2
        pressure = 2 if queued >= 400 or p99 >= 800 else 1 if queued >= 100 or p99 >= 200 else 0
        assert level >= pressure  # never under-reports overload
        assert level >= previous - 1  # steps down one level at a time
        previous = level


def test_fleet_config_blocks_build_the_pure_modules_config_classes() -> None:
    from pathlib import Path

    from fleet_core.config import ConfigError, load_fleet_config, parse_fleet_config
    from fleet_core.health import HealthConfig
    from fleet_core.leadership import LeaseConfig
    from fleet_core.waves import WaveConfig

    fleet = load_fleet_config(Path(__file__).resolve().parents[3] / 'config' / 'fleet.yaml')
    assert isinstance(fleet.health, HealthConfig) and isinstance(fleet.leadership, LeaseConfig)
    assert isinstance(fleet.operations, WaveConfig) and isinstance(fleet.degradation, DegradationConfig)
    assert fleet.degradation.telemetry_factor == (1.0, 0.25, 0.05)
    sites = {'s': {'shards': {'z': {'agents': ['r1']}}}}
    raw = {'sites': sites, 'degradation': {'level1_queue_depth': 10, 'level2_queue_depth': 5}}
    with pytest.raises(ConfigError, match=r'^f\.yaml: degradation\.level1_queue_depth'):
        parse_fleet_config(raw, 'f.yaml')
    with pytest.raises(ConfigError, match=r'f\.yaml: operations\.wave_size: expected an integer'):
        parse_fleet_config({'sites': sites, 'operations': {'wave_size': 'x'}}, 'f.yaml')
    with pytest.raises(ConfigError, match=r'f\.yaml: health\.missed_heartbeats_lost must be greater'):
        parse_fleet_config({'sites': sites, 'health': {'missed_heartbeats_lost': 2}}, 'f.yaml')
    with pytest.raises(ConfigError, match=r'f\.yaml: leadership\.lease: unknown key'):
        parse_fleet_config({'sites': sites, 'leadership': {'lease': 1}}, 'f.yaml')

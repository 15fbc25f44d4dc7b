"""Tests for fleet_core.health: liveness thresholds, recovery, acks, and a model-checked state machine."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fleet_core.health import HealthConfig, HealthConfigError, HealthMonitor, Liveness, UnknownAgent

CONFIG = HealthConfig(heartbeat_period_sec=0.5, missed_heartbeats_suspect=2, missed_heartbeats_lost=4)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def beat(monitor: HealthMonitor, agent: str, seq: int = 0, epoch: int = 1) -> list[object]:
    return list(monitor.on_heartbeat(agent, stamp=0.0, last_applied_seq=seq, highest_epoch_seen=epoch))


def test_config_is_validated() -> None:
    with pytest.raises(HealthConfigError, match='heartbeat_period_sec'):
        HealthConfig(heartbeat_period_sec=0)
    with pytest.raises(HealthConfigError, match='missed_heartbeats_lost'):
        HealthConfig(missed_heartbeats_suspect=3, missed_heartbeats_lost=3)
    with pytest.raises(HealthConfigError, match='missed_heartbeats_suspect'):
        HealthConfig(missed_heartbeats_suspect=0)
    assert CONFIG.lost_after_sec == 2.0 and CONFIG.suspect_after_sec == 1.0


def test_online_suspect_lost_and_recovery() -> None:
    clock = Clock()
    monitor = HealthMonitor(CONFIG, ['b', 'a'], clock=clock)
    assert monitor.liveness('a') is Liveness.UNKNOWN
    (change,) = beat(monitor, 'a', seq=3, epoch=2)
    assert (change.previous, change.current) == (Liveness.UNKNOWN, Liveness.ONLINE)  # type: ignore[attr-defined]  # beat() returns changes typed as object
    beat(monitor, 'b')
    clock.now += 0.99
    assert monitor.evaluate() == []
    clock.now += 0.01
    suspects = monitor.evaluate()
    assert [(c.agent_id, c.current) for c in suspects] == [('a', Liveness.SUSPECT), ('b', Liveness.SUSPECT)]
    assert monitor.online() == ['a', 'b']
    beat(monitor, 'b')
    clock.now += 1.0
    lost = monitor.evaluate()
    assert [(c.agent_id, c.current) for c in lost] == [('a', Liveness.LOST), ('b', Liveness.SUSPECT)]
    assert monitor.evaluate() == []  # reported once
    assert monitor.lost() == ['a'] and monitor.online() == ['b']  # SUSPECT still counts online
    (back,) = beat(monitor, 'a', seq=5, epoch=1)
    assert (back.previous, back.current, back.reason) == (Liveness.LOST, Liveness.ONLINE, 'heartbeat')  # type: ignore[attr-defined]  # beat() returns changes typed as object
    record = monitor.health('a')
    assert record.last_applied_seq == 5 and record.highest_epoch_seen == 2  # epoch never goes down
    assert monitor.highest_epoch_seen() == 2


def test_silent_from_start_becomes_lost_without_suspect() -> None:
    clock = Clock()
    monitor = HealthMonitor(CONFIG, ['a'], clock=clock)
    clock.now += 1.5
    assert monitor.evaluate() == []
    clock.now += 0.5
    (change,) = monitor.evaluate()
    assert (change.previous, change.current) == (Liveness.UNKNOWN, Liveness.LOST)


def test_acks_keep_an_agent_alive_but_do_not_revive_it() -> None:
    clock = Clock()
    monitor = HealthMonitor(CONFIG, ['a'], clock=clock)
    beat(monitor, 'a')
    for _ in range(5):
        clock.now += 0.9
        monitor.on_ack('a')
        assert monitor.evaluate() == []
    clock.now += 2.0
    monitor.evaluate()
    assert monitor.liveness('a') is Liveness.LOST
    assert monitor.on_ack('a') == []
    assert monitor.liveness('a') is Liveness.LOST


def test_unknown_agent_is_refused() -> None:
    monitor = HealthMonitor(CONFIG, ['a'], clock=Clock())
    with pytest.raises(UnknownAgent, match="'zz' is not configured"):
        beat(monitor, 'zz')
    with pytest.raises(UnknownAgent):
        monitor.on_ack('zz')


class HealthModel(RuleBasedStateMachine):
    """Compare the monitor against a direct model: state is a function of silence since the last proof of life."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.monitor = HealthMonitor(CONFIG, ['a', 'b'], clock=self.clock)
        self.last_seen = {'a': self.clock.now, 'b': self.clock.now}
        self.heard = {'a': False, 'b': False}
        self.lost = {'a': False, 'b': False}

    @rule(dt=st.floats(0.0, 1.5))
    def advance(self, dt: float) -> None:
        self.clock.now += dt
        for change in self.monitor.evaluate():
            assert change.previous is not change.current
            if change.current is Liveness.LOST:
                self.lost[change.agent_id] = True
        for agent in ('a', 'b'):
            if self.clock.now - self.last_seen[agent] >= CONFIG.lost_after_sec:
                self.lost[agent] = True

    @rule(agent=st.sampled_from(['a', 'b']))
    def heartbeat(self, agent: str) -> None:
        beat(self.monitor, agent)
        self.last_seen[agent] = self.clock.now
        self.heard[agent] = True
        self.lost[agent] = False

    @rule(agent=st.sampled_from(['a', 'b']))
    def ack(self, agent: str) -> None:
        self.monitor.on_ack(agent)
        if not self.lost[agent]:
            self.last_seen[agent] = self.clock.now

    @invariant()
    def matches_model(self) -> None:
        for agent in ('a', 'b'):
            actual = self.monitor.liveness(agent)
            if self.lost[agent]:
                assert actual is Liveness.LOST
            else:
                assert actual is not Liveness.LOST


TestHealthModel = HealthModel.TestCase
TestHealthModel.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)

"""Tests for fleet_core.waves: wave planning and the latched e-stop state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fleet_core.waves import (
    EmptyEStopScope,
    EStopNotEngaged,
    EStopState,
    FleetOp,
    WaveConfig,
    WaveError,
    WavePlan,
    plan_operation,
)


def plan(agents: list[str], config: WaveConfig, now: float = 10.0) -> WavePlan:
    return plan_operation(
        operation_id='op1', site_id='site_a', op=FleetOp.PAUSE, agent_ids=agents, config=config, now=now, issued_by='op'
    )


def test_waves_are_announced_and_staggered() -> None:
    agents = [f'r{i:02d}' for i in range(7)]
    result = plan_operation(
        operation_id='op1',
        site_id='site_a',
        op=FleetOp.PAUSE,
        agent_ids=list(reversed(agents)),
        config=WaveConfig(wave_size=3, wave_interval_sec=0.5, lead_time_sec=1.0),
        now=10.0,
        issued_by='alice',
    )
    assert (result.waves, result.wave_size, result.starts_at) == (3, 3, 11.0)
    assert [w.agent_ids for w in result.schedule] == [('r00', 'r01', 'r02'), ('r03', 'r04', 'r05'), ('r06',)]
    assert [w.at for w in result.schedule] == [11.0, 11.5, 12.0]
    assert result.due(10.9, sent=0) == ()
    assert [w.index for w in result.due(11.5, sent=0)] == [0, 1]
    assert [w.index for w in result.due(12.0, sent=2)] == [2]
    assert result.time_for('r04') == 11.5
    with pytest.raises(KeyError):
        result.time_for('nobody')


def test_bad_operations_are_refused() -> None:
    with pytest.raises(WaveError, match='addresses no agent'):
        plan([], WaveConfig())
    with pytest.raises(WaveError, match='wave_size'):
        WaveConfig(wave_size=0)
    with pytest.raises(WaveError, match='wave_interval_sec'):
        WaveConfig(wave_interval_sec=-1.0)


@settings(max_examples=100, deadline=None)
@given(
    agents=st.sets(st.text('abcdef', min_size=1, max_size=4), min_size=1, max_size=60),
    size=st.integers(1, 20),
    interval=st.floats(0.0, 5.0),
)
def test_every_agent_is_scheduled_exactly_once(agents: set[str], size: int, interval: float) -> None:
    result = plan(sorted(agents), WaveConfig(wave_size=size, wave_interval_sec=interval, lead_time_sec=0.0))
    scheduled = [a for wave in result.schedule for a in wave.agent_ids]
    assert sorted(scheduled) == sorted(agents)
    assert all(len(w.agent_ids) <= size for w in result.schedule)
    assert result.waves == -(-len(agents) // size)
    times = [w.at for w in result.schedule]
    assert times == sorted(times)


def test_estop_is_latched_and_revisioned() -> None:
    now = [5.0]
    estop = EStopState(site_id='site_a', shard_id='zone_1', clock=lambda: now[0])
    with pytest.raises(EStopNotEngaged, match='nothing to resume'):
        estop.release(reason='oops', issued_by='op')
    assert estop.snapshot.revision == 0  # no partial state
    with pytest.raises(EmptyEStopScope, match='addresses no agent'):
        estop.engage(scope=[], reason='x', issued_by='op')
    assert not estop.engaged
    now[0] = 6.0
    engaged = estop.engage(scope=['r1', 'r2'], reason='person in aisle', issued_by='alice')
    assert (engaged.engaged, engaged.revision, engaged.stamp, engaged.reason) == (True, 1, 6.0, 'person in aisle')
    assert estop.engage(scope=['r1'], reason='still', issued_by='bob').revision == 2
    released = estop.release(reason='clear', issued_by='alice')
    assert (released.engaged, released.revision) == (False, 3)

    agent_view = EStopState(site_id='site_a', shard_id='zone_1', clock=lambda: 0.0)
    assert agent_view.observe(released)
    assert not agent_view.observe(engaged)  # an older revision arriving late never re-engages or clears
    assert not agent_view.engaged
    other_shard = EStopState(site_id='site_a', shard_id='zone_2', clock=lambda: 0.0)
    assert not other_shard.observe(released)


class EStopModel(RuleBasedStateMachine):
    """An agent that sees snapshots in any order ends with the newest one it received."""

    def __init__(self) -> None:
        super().__init__()
        self.source = EStopState(site_id='s', shard_id='z', clock=lambda: 0.0)
        self.agent = EStopState(site_id='s', shard_id='z', clock=lambda: 0.0)
        self.sent: list[object] = []
        self.max_delivered = 0

    @rule()
    def engage(self) -> None:
        self.sent.append(self.source.engage(scope=['r'], reason='', issued_by='op'))

    @rule()
    def release(self) -> None:
        if self.source.engaged:
            self.sent.append(self.source.release(reason='', issued_by='op'))
        else:
            with pytest.raises(EStopNotEngaged):
                self.source.release(reason='', issued_by='op')

    @rule(index=st.integers(0, 50))
    def deliver(self, index: int) -> None:
        if self.sent:
            snapshot = self.sent[index % len(self.sent)]
            self.agent.observe(snapshot)  # type: ignore[arg-type]  # sent holds snapshots typed as object
            self.max_delivered = max(self.max_delivered, snapshot.revision)  # type: ignore[attr-defined]  # sent holds snapshots typed as object

    @invariant()
    def agent_holds_newest_delivered(self) -> None:
        assert self.agent.snapshot.revision == self.max_delivered
        revisions = [s.revision for s in self.sent]  # type: ignore[attr-defined]  # sent holds snapshots typed as object
        assert revisions == list(range(1, len(revisions) + 1))


TestEStopModel = EStopModel.TestCase
TestEStopModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)

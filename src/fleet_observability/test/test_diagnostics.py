"""Diagnostics: levels from stats, DiagnosticArray contents, and the /diagnostics publisher."""

from __future__ import annotations

import math
from typing import Any

from fleet_observability.diagnostics import (
    ERROR,
    OK,
    WARN,
    DiagnosticsPublisher,
    agent_diagnostics,
    agent_level,
    shard_diagnostics,
    shard_level,
    shard_stats_from_status,
)

HEALTHY = {
    'leader_id': 'orch-1',
    'epoch': 3,
    'agents_total': 50,
    'agents_online': 50,
    'agents_lost': 0,
    'queue_depth': [0, 2, 0, 0],
    'in_flight': 4,
    'degradation_level': 0,
    'ack_latency_p99_ms': 12.5,
}


def test_shard_levels() -> None:
    assert shard_level(HEALTHY) == (OK, '50/50 agents online')
    assert shard_level({**HEALTHY, 'agents_lost': 3, 'agents_online': 47})[0] == WARN
    assert shard_level({**HEALTHY, 'agents_lost': 30})[0] == ERROR
    level, message = shard_level({**HEALTHY, 'leader_id': '', 'degradation_level': 1})
    assert level == ERROR
    assert message == 'no leader; degradation 1: telemetry reduced'
    assert shard_level({**HEALTHY, 'queue_depth': [900, 200, 0, 0]}) == (WARN, '1100 commands queued')
    assert shard_level({**HEALTHY, 'ack_latency_p99_ms': 2500.0}) == (WARN, 'ack p99 2500 ms')


def test_agent_levels() -> None:
    assert agent_level({'state': 0, 'battery_pct': 80.0}) == (OK, 'idle')
    assert agent_level({'state': 3, 'battery_pct': math.nan}) == (WARN, 'e-stopped')
    assert agent_level({'state': 4})[0] == ERROR
    assert agent_level({'state': 1, 'battery_pct': 15.0}) == (WARN, 'battery 15%')
    assert agent_level({'state': 'BUSY', 'battery_pct': 3.0}) == (ERROR, 'battery 3%')


def test_arrays_carry_names_ids_and_values() -> None:
    array = shard_diagnostics('site_a', 'zone_1', HEALTHY, stamp=1_700_000_000.5)
    assert array.header.stamp.sec == 1_700_000_000
    (status,) = array.status
    assert status.name == 'fleet/site_a/zone_1/orchestrator'
    assert status.hardware_id == 'site_a/zone_1'
    assert status.level == bytes([OK])
    values = {kv.key: kv.value for kv in status.values}
    assert values['queue_depth'] == '0,2,0,0'
    assert values['ack_latency_p99_ms'] == '12.5'
    (agent,) = agent_diagnostics('site_a', 'a1_r001', {'state': 4, 'last_applied_seq': 17}).status
    assert agent.name == 'fleet/site_a/a1_r001/agent'
    assert agent.level == bytes([ERROR])
    assert {kv.key: kv.value for kv in agent.values}['last_applied_seq'] == '17'


def test_stats_from_shard_status_message() -> None:
    from fleet_interfaces.msg import ShardStatus

    msg = ShardStatus(
        leader_id='x',
        epoch=9,
        agents_total=2,
        agents_online=1,
        agents_lost=1,
        lost_agent_ids=['r2'],
        in_flight=3,
        submitted=40,
        succeeded=31,
        failed=2,
        expired=1,
        rejected=4,
        shed=5,
        retries=6,
        duplicates_suppressed=7,
        ack_latency_p50_ms=1.5,
        ack_latency_p99_ms=8.25,
        degradation_level=1,
    )
    msg.queue_depth = [1, 2, 3, 4]
    stats = shard_stats_from_status(msg)
    expected_counters = {
        'epoch': 9,
        'agents_total': 2,
        'agents_online': 1,
        'agents_lost': 1,
        'in_flight': 3,
        'submitted': 40,
        'succeeded': 31,
        'failed': 2,
        'expired': 1,
        'rejected': 4,
        'shed': 5,
        'retries': 6,
        'duplicates_suppressed': 7,
        'ack_latency_p50_ms': 1.5,
        'ack_latency_p99_ms': 8.25,
        'degradation_level': 1,
    }
    assert stats == {
        'leader_id': 'x',
        **expected_counters,
        'queue_depth': [1, 2, 3, 4],
        'lost_agent_ids': ['r2'],
    }
    assert shard_level(stats) == (ERROR, '1/2 agents lost; degradation 1: telemetry reduced')
    # Every counter reaches the DiagnosticArray as a key/value an operator can read.
    (status,) = shard_diagnostics('s', 'z', stats).status
    values = {kv.key: kv.value for kv in status.values}
    assert values == {
        'leader_id': 'x',
        **{k: f'{v:g}' for k, v in expected_counters.items()},
        'queue_depth': '1,2,3,4',
        'lost_agent_ids': 'r2',
    }


def test_publisher_publishes_the_current_stats_each_period(ros: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    from fleet_ros import qos

    node = ros.node('diag_pub')
    listener = ros.node('diag_listener')
    got: list[Any] = []
    listener.create_subscription(DiagnosticArray, '/diagnostics', got.append, qos.EVENTS)
    calls = 0

    def source() -> Any:
        nonlocal calls
        calls += 1
        return shard_diagnostics('site_a', 'zone_1', {**HEALTHY, 'in_flight': calls})

    publisher = DiagnosticsPublisher(node, source, period_sec=0.05)
    try:
        ros.spin_until(lambda: len(got) >= 3, 10.0, what='three /diagnostics messages')
    finally:
        publisher.close()
    (status,) = got[0].status
    assert status.name == 'fleet/site_a/zone_1/orchestrator' and status.level == bytes([OK])
    in_flight = [int({kv.key: kv.value for kv in m.status[0].values}['in_flight']) for m in got]
    assert in_flight == sorted(set(in_flight)) and len(in_flight) >= 3  # a fresh reading every period
    # close() removes what the publisher created on the node: its timer and its /diagnostics publisher.
    assert list(node.timers) == []
    assert all(p.topic_name != '/diagnostics' for p in node.publishers)

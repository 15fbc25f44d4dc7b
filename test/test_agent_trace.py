"""Agent-side trace hops, end to end: with every submission sampled, a command recorded by `fleetctl record` shows
the agent's RECEIVE, START and FINISH hops in `fleetctl trace <id> --from file.mcap`, between the orchestrator's
DELIVER and its OUTCOME."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_interfaces.msg import Heartbeat, ShardStatus, TraceEvent
from fleet_ros import qos

pytestmark = pytest.mark.system

SITE, SHARD, AGENT = 'site_tr', 'zone_tr', 'r1'


def test_fleetctl_trace_shows_the_agent_hops_of_a_sampled_command(ros, processes, tmp_path: Path):
    config = tmp_path / 'fleet.yaml'
    config.write_text(
        yaml.safe_dump(
            {
                'sites': {SITE: {'shards': {SHARD: {'agents': [AGENT]}}}},
                'leadership': {'first_lease_wait_sec': 1.0},
                'tracing': {'sample_fraction': 1.0},
            }
        )
    )
    node = ros.node('agent_trace_test')
    beats: list[Heartbeat] = []
    statuses: list[ShardStatus] = []
    node.create_subscription(Heartbeat, topics.shard_heartbeat(SITE, SHARD), beats.append, qos.HEARTBEAT)
    node.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    common = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    processes.start(['shard_orchestrator', *common], name='orchestrator')
    processes.start(['fleet_agent', *common, '-p', f'store_dir:={tmp_path / "st"}'], name='agent')
    ros.spin_until(lambda: beats and any(s.leader_id for s in statuses), 40.0, 'the agent and a leader')

    def fleetctl(*args: str) -> tuple[int, str]:
        proc = processes.start(['fleetctl', '--config', str(config), *args], name='fleetctl')
        code = ros.spin_until(lambda: not proc.alive() and (proc.popen.returncode,), 60.0, f'fleetctl {args[0]}')[0]
        return code, proc.output()

    recording = tmp_path / 'trace.mcap'
    trace_topic = topics.shard_trace(SITE, SHARD)
    recorder = processes.start(
        ['fleetctl', 'record', '-o', str(recording), '--topic', trace_topic, '--discovery-period', '0.2'],
        name='recorder',
    )
    # Nothing else subscribes to the trace topic: one subscriber is the recorder, ready before the submission.
    ros.spin_until(lambda: node.count_subscribers(trace_topic) >= 1, 30.0, 'the recorder on the trace topic')
    seen: list[TraceEvent] = []
    node.create_subscription(TraceEvent, trace_topic, seen.append, qos.EVENTS)
    ros.spin_until(lambda: node.count_subscribers(trace_topic) >= 2, 30.0, 'the test on the trace topic')

    code, out = fleetctl('submit', '--agents', AGENT, '--kind', 'noop', '--json')
    assert code == 0, out
    command_id = next(json.loads(line) for line in out.splitlines() if line.startswith('{'))['command_id']
    # The submission returns at the outcome, which may be ahead of the last hops on the trace topic: the recorder
    # stops once they have been published (this test saw them).
    last_hops = {TraceEvent.HOP_FINISH, TraceEvent.HOP_OUTCOME}
    ros.spin_until(
        lambda: last_hops <= {e.hop for e in seen if e.command_id == command_id}, 30.0, 'the FINISH and OUTCOME hops'
    )
    assert recorder.stop() == 0, recorder.output()

    code, timeline = fleetctl('trace', command_id, '--from', str(recording))
    assert code == 0, timeline
    hops = re.findall(r'^\s*[+-]?\d+\.\d\s+[+-]?\d+\.\d\s+(\w+)\s+\S+\s+(\S+)\s+(\S+)', timeline, re.MULTILINE)
    names = [hop for hop, _, _ in hops]
    agent_hops = [(hop, status) for hop, status, node_name in hops if node_name == 'agent_host']
    assert agent_hops == [('RECEIVE', 'ACCEPTED'), ('START', '-'), ('FINISH', 'SUCCEEDED')], timeline
    assert names.index('DELIVER') < names.index('RECEIVE') < names.index('START') < names.index('FINISH')
    assert names.index('FINISH') < names.index('OUTCOME'), timeline
    assert 'SUCCEEDED' in timeline.splitlines()[-1]

"""The orchestrator's Prometheus endpoint and /diagnostics reflect real traffic."""

from __future__ import annotations

import re
import urllib.request

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from test_command_path import SHARD, SITE, ros_params, start_agents, write_config

from fleet_core import topics
from fleet_interfaces.msg import LeaderLease
from fleet_interfaces.srv import SubmitCommand
from fleet_ros import qos
from harness import wait_for

pytestmark = pytest.mark.system


def test_metrics_endpoint_and_diagnostics_count_outcomes(ros, processes, tmp_path):
    config = write_config(tmp_path, agents=3)
    orchestrator = processes.start(['shard_orchestrator', *ros_params(config, metrics_port=0)], name='orchestrator')
    start_agents(processes, config, tmp_path / 'stores', tmp_path / 'exec.log', delay=0.01)
    url = wait_for(
        lambda: (m := re.search(r'at (http://127\.0\.0\.1:\d+/metrics)', orchestrator.output())) and m.group(1),
        30,
        what='the metrics URL in the orchestrator log',
    )
    node = ros.node('metrics_probe')
    leases: list[LeaderLease] = []
    diagnostics: list[DiagnosticArray] = []
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, qos.EVENTS)
    client = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    ros.spin_until(lambda: client.service_is_ready() and leases, 30, 'a leading orchestrator')
    reply = ros.submit(client, SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=10.0))
    assert reply.accepted, reply.error

    def succeeded() -> float:
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        found = re.search(r'fleet_outcomes_total\{[^}]*outcome="SUCCEEDED"[^}]*\} (\S+)', body)
        return float(found.group(1)) if found else 0.0

    wait_for(lambda: succeeded() >= 3, 30, what='3 SUCCEEDED outcomes counted by the metrics endpoint', interval=0.2)

    def shard_diagnostic() -> dict[str, str] | None:
        """The latest shard status on /diagnostics once it counts the 3 outcomes."""
        for array in reversed(diagnostics):
            for status in array.status:
                if status.name == f'fleet/{SITE}/{SHARD}/orchestrator':
                    values = {kv.key: kv.value for kv in status.values}
                    return values if int(values['succeeded']) >= 3 else None
        return None

    values = ros.spin_until(shard_diagnostic, 10, 'a shard diagnostic counting 3 SUCCEEDED outcomes')
    assert values['succeeded'] == '3' and values['submitted'] == '3', values
    assert values['leader_id'] == leases[-1].leader_id and values['agents_total'] == '3', values

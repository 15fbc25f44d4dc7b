"""The fleet Foxglove server driven by the real @foxglove/ws-protocol client under node.

The server and a fake orchestrator (SubmitCommand/SetEStop services, a TraceEvent and an Odometry publisher)
run in this process; test/js/foxglove_client.mjs runs as a subprocess with a timeout and reports JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import wait_for

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / 'test' / 'js' / 'foxglove_client.mjs'
TRACE_TOPIC = '/fleet/site_a/zone_1/trace'
ODOM_TOPIC = '/site_a/a1_r001/odom'
SUBMIT = '/fleet/site_a/zone_1/submit'
ESTOP = '/fleet/site_a/zone_1/set_estop'
OPERATOR_TOKEN = 'operator-token-0123456789'
VIEWER_TOKEN = 'viewer-token-0123456789ab'

pytestmark = pytest.mark.skipif(
    shutil.which('node') is None or not (ROOT / 'test/js/node_modules/@foxglove/ws-protocol').is_dir(),
    reason='node and test/js/node_modules are installed by scripts/setup.sh',
)


def run_client(port: int, steps: list[dict[str, Any]], tmp_path: Path, timeout: float = 60.0) -> dict[str, Any]:
    steps_file = tmp_path / 'steps.json'
    steps_file.write_text(json.dumps(steps))
    done = subprocess.run(
        ['node', str(CLIENT), f'ws://127.0.0.1:{port}', str(steps_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT / 'test' / 'js',
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert 'error' not in report, f'{report.get("error")}\nresults: {report["results"]}'
    return report


class FakeOrchestrator:
    """Serves submit/e-stop like a shard leader and publishes a TraceEvent and an agent pose periodically."""

    def __init__(self, ros: Any) -> None:
        from nav_msgs.msg import Odometry

        from fleet_interfaces.msg import TraceEvent
        from fleet_interfaces.srv import SetEStop, SubmitCommand
        from fleet_ros import qos

        self.node = ros.node('fake_orchestrator')
        self.submissions: list[Any] = []
        self.estops: list[Any] = []
        self.node.create_service(SubmitCommand, SUBMIT, self._submit)
        self.node.create_service(SetEStop, ESTOP, self._estop)
        trace_pub = self.node.create_publisher(TraceEvent, TRACE_TOPIC, qos.EVENTS)
        odom_pub = self.node.create_publisher(Odometry, ODOM_TOPIC, qos.TELEMETRY)
        event = TraceEvent(command_id='cmd-known', trace_id='trace-1', agent_id='a1_r001', shard_id='zone_1',
                           node='fake_orchestrator', hop=TraceEvent.HOP_DELIVER, attempt=1, status='SENT')  # fmt: skip
        odom = Odometry()
        odom.header.frame_id = 'map'
        odom.pose.pose.position.x = 1.5

        def tick() -> None:
            trace_pub.publish(event)
            odom_pub.publish(odom)

        self.node.create_timer(0.05, tick)

    def _submit(self, request: Any, response: Any) -> Any:
        self.submissions.append(request)
        response.accepted = True
        response.trace_id = request.trace_id or 'generated-trace'
        response.agent_ids_out = list(request.agent_ids)
        response.command_ids = [f'cmd-{a}' for a in request.agent_ids]
        return response

    def _estop(self, request: Any, response: Any) -> Any:
        self.estops.append(request)
        response.ok = True
        response.revision = len(self.estops)
        return response


@pytest.fixture
def spinning(ros: Any) -> Iterator[Any]:
    from fleet_ros.spin import SpinThread

    orchestrator = FakeOrchestrator(ros)
    spin = SpinThread(ros.executor, name='test-spin').start()
    try:
        yield ros, orchestrator
    finally:
        spin.stop()


def start_bridge(ros: Any, tokens: dict[str, str] | None = None) -> Any:
    from fleet_observability.foxglove_server import FleetFoxgloveBridge, FoxgloveSettings
    from fleet_observability.foxglove_services import AccessPolicy

    node = ros.node('fleet_foxglove_test')
    bridge = FleetFoxgloveBridge(
        node,
        FoxgloveSettings(port=0, discovery_period_sec=0.1, parameters={'fleet.sites': ['site_a']}),
        AccessPolicy(tokens=tokens or {}),
    )
    bridge.start()
    wait_for(
        lambda: TRACE_TOPIC in bridge.channels and ODOM_TOPIC in bridge.channels and SUBMIT in bridge.services,
        10.0,
        what='the bridge to discover the fake orchestrator topics and services',
    )
    return bridge


def submit_hex(**fields: Any) -> str:
    from rclpy.serialization import serialize_message

    from fleet_interfaces.srv import SubmitCommand

    return bytes(serialize_message(SubmitCommand.Request(**fields))).hex()


def test_subscribe_decode_and_call_services(spinning: Any, tmp_path: Path) -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    from fleet_interfaces.msg import TraceEvent
    from fleet_interfaces.srv import SetEStop, SubmitCommand

    ros, orchestrator = spinning
    bridge = start_bridge(ros)
    try:
        # Lazy: discovered topics are channels, but nothing is subscribed in ROS until a client watches one.
        assert bridge.following == frozenset()
        estop_hex = bytes(serialize_message(SetEStop.Request(engage=True, reason='test', issued_by='op'))).hex()
        report = run_client(
            bridge.port,
            [
                {'op': 'wait_channel', 'topic': TRACE_TOPIC},
                {'op': 'wait_channel', 'topic': ODOM_TOPIC},
                {'op': 'subscribe', 'topic': TRACE_TOPIC, 'count': 2},
                {'op': 'wait_service', 'name': SUBMIT},
                {
                    'op': 'call',
                    'service': SUBMIT,
                    'encoding': 'cdr',
                    'hex': submit_hex(
                        agent_ids=['a1_r001', 'a1_r002'],
                        kind='noop',
                        args_json='{}',
                        priority=1,
                        ttl_sec=10.0,
                        trace_id='t-42',
                    ),
                },
                {'op': 'call', 'service': ESTOP, 'encoding': 'cdr', 'hex': estop_hex},
                {'op': 'get_parameters', 'names': []},
                {'op': 'check_open'},
            ],
            tmp_path,
        )
        # The client has gone: its subscription is released again.
        wait_for(lambda: not bridge.following, 10.0, what='the bridge to drop the ROS subscription nobody watches')
    finally:
        bridge.close()
    trace_ch, odom_ch, sub, service, submit, estop, params, still_open = report['results']

    assert trace_ch['encoding'] == 'cdr'
    assert trace_ch['schemaName'] == 'fleet_interfaces/msg/TraceEvent'
    assert trace_ch['schemaEncoding'] == 'ros2msg'
    assert 'uint8 HOP_DELIVER=2' in trace_ch['schema']
    assert 'MSG: builtin_interfaces/Time' in trace_ch['schema']
    assert odom_ch['schemaName'] == 'nav_msgs/msg/Odometry'
    assert 'MSG: geometry_msgs/Pose\n' in odom_ch['schema']

    # CDR passed through untouched: node's tiny reader sees the first string, rclpy decodes the whole message.
    for message in sub['messages']:
        assert message['firstString'] == 'cmd-known'
        decoded = deserialize_message(bytes.fromhex(message['hex']), TraceEvent)
        assert (decoded.trace_id, decoded.hop, decoded.attempt) == ('trace-1', TraceEvent.HOP_DELIVER, 1)

    assert service['type'] == 'fleet_interfaces/srv/SubmitCommand'
    response = deserialize_message(bytes.fromhex(submit['hex']), SubmitCommand.Response)
    assert response.accepted
    assert list(response.command_ids) == ['cmd-a1_r001', 'cmd-a1_r002']
    assert response.trace_id == 't-42'
    assert orchestrator.submissions[-1].kind == 'noop'
    assert deserialize_message(bytes.fromhex(estop['hex']), SetEStop.Response).ok
    assert orchestrator.estops[-1].engage

    names = {p['name']: p['value'] for p in params['parameters']}
    assert names['fleet.sites'] == ['site_a']
    assert TRACE_TOPIC in names['bridge.exposed_topics']
    assert still_open['open']


def test_bad_requests_get_errors_and_the_client_stays_connected(spinning: Any, tmp_path: Path) -> None:
    ros, orchestrator = spinning
    bridge = start_bridge(ros)
    try:
        report = run_client(
            bridge.port,
            [
                {'op': 'subscribe_unknown', 'channelId': 987654},
                {'op': 'call_unknown', 'serviceId': 424242},
                {'op': 'call', 'service': SUBMIT, 'encoding': 'cdr', 'hex': '00010000ffffffff'},
                {'op': 'call', 'service': SUBMIT, 'encoding': 'json', 'text': '{"kind": "noop"}'},
                {'op': 'set_parameters', 'parameters': [{'name': 'fleet.sites', 'value': ['evil']}]},
                {'op': 'subscribe', 'topic': TRACE_TOPIC, 'count': 1},
                {'op': 'check_open'},
            ],
            tmp_path,
        )
    finally:
        bridge.close()
    unknown_channel, unknown_service, malformed, wrong_encoding, set_params, sub, still_open = report['results']
    assert any('Unknown channel ID: 987654' in s['message'] for s in unknown_channel['statuses'])
    assert unknown_service['failures'][0]['message'] == 'Unknown service'
    assert 'malformed fleet_interfaces/srv/SubmitCommand request' in malformed['failure']
    assert 'encoding' in wrong_encoding['failure'].lower()
    assert set_params['parameters'] == [{'name': 'fleet.sites', 'value': ['site_a']}]
    assert any('read-only' in s['message'] for s in set_params['statuses'])
    assert sub['messages'][0]['firstString'] == 'cmd-known'
    assert still_open['open']
    assert orchestrator.submissions == []


def test_tokens_gate_operator_services(spinning: Any, tmp_path: Path) -> None:
    ros, orchestrator = spinning
    bridge = start_bridge(ros, tokens={OPERATOR_TOKEN: 'operator', VIEWER_TOKEN: 'viewer'})
    request = submit_hex(agent_ids=['a1_r003'], kind='noop', args_json='{}', priority=1, ttl_sec=5.0)
    call = {'op': 'call', 'service': SUBMIT, 'encoding': 'cdr', 'hex': request}
    try:
        report = run_client(
            bridge.port,
            [
                call,
                {'op': 'call', 'service': '/fleet/login', 'encoding': 'json', 'text': '{"token": "wrong-token"}'},
                {
                    'op': 'call',
                    'service': '/fleet/login',
                    'encoding': 'json',
                    'text': json.dumps({'token': VIEWER_TOKEN}),
                },
                call,
                {'op': 'call', 'service': '/fleet/login', 'encoding': 'json', 'text': 'not json'},
                {
                    'op': 'call',
                    'service': '/fleet/login',
                    'encoding': 'json',
                    'text': json.dumps({'token': OPERATOR_TOKEN}),
                },
                call,
            ],
            tmp_path,
        )
    finally:
        bridge.close()
    anonymous, bad_login, viewer_login, as_viewer, garbage_login, operator_login, as_operator = report['results']
    assert 'not logged in' in anonymous['failure']
    assert 'unknown token' in bad_login['failure']
    assert json.loads(bytes.fromhex(viewer_login['hex'])) == {'role': 'viewer'}
    assert "role 'viewer' may not call" in as_viewer['failure']
    assert 'must be JSON' in garbage_login['failure']
    assert json.loads(bytes.fromhex(operator_login['hex'])) == {'role': 'operator'}
    assert 'hex' in as_operator
    assert [list(r.agent_ids) for r in orchestrator.submissions] == [['a1_r003']]


def test_public_bind_without_tokens_is_refused(ros_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, '-m', 'fleet_observability.foxglove_server', '--host', '0.0.0.0', '--port', '0'],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(ros_env),
        check=False,
    )
    assert done.returncode == 2
    assert 'refusing to bind the Foxglove server to 0.0.0.0 without tokens' in done.stderr


def test_public_bind_rejected_in_process() -> None:
    from fleet_observability.foxglove_services import AccessConfigError, AccessPolicy

    with pytest.raises(AccessConfigError, match='--tokens'):
        AccessPolicy().check_bind('10.1.2.3')
    AccessPolicy(tokens={OPERATOR_TOKEN: 'operator'}).check_bind('10.1.2.3')
    AccessPolicy().check_bind('::1')
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'

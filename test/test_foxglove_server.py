"""The fleet Foxglove server driven by the real @foxglove/ws-protocol client under node.

The server and a fake orchestrator (SubmitCommand/SetEStop services, TraceEvent, Odometry and mission feedback
publishers) run in this process; test/js/foxglove_client.mjs runs as a subprocess with a timeout and reports JSON.
With tokens configured the client goes through the access gate; the refusals (no channels before login, a
viewer's publish, wrong tokens) are asserted as the client sees them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
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
ESTOP_TOPIC = '/fleet/site_a/zone_1/estop'
FEEDBACK_TOPIC = '/fleet/site_a/zone_1/mission/_action/feedback'
LOGIN_BACKOFF_SEC = 0.3
SERVER = (sys.executable, '-m', 'fleet_observability.foxglove_server')
OPERATOR_TOKEN = 'operator-token-0123456789'
VIEWER_TOKEN = 'viewer-token-0123456789ab'

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        shutil.which('node') is None or not (ROOT / 'test/js/node_modules/@foxglove/ws-protocol').is_dir(),
        reason='node and test/js/node_modules are installed by scripts/setup.sh',
    ),
]


def run_client(
    port: int,
    steps: list[dict[str, Any]],
    tmp_path: Path,
    timeout: float = 60.0,
    *,
    scheme: str = 'ws',
    ca: Path | None = None,
    expect_error: bool = False,
) -> dict[str, Any]:
    steps_file = tmp_path / 'steps.json'
    steps_file.write_text(json.dumps(steps))
    env = dict(os.environ)
    if ca is not None:
        env['FOXGLOVE_CA'] = str(ca)
    done = subprocess.run(
        ['node', str(CLIENT), f'{scheme}://127.0.0.1:{port}', str(steps_file)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT / 'test' / 'js',
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not expect_error:
        assert 'error' not in report, f'{report.get("error")}\nresults: {report["results"]}'
    return report


def login(token: str) -> dict[str, Any]:
    return {'op': 'login', 'token': token}


def messages(statuses: list[dict[str, Any]]) -> str:
    return '\n'.join(s['message'] for s in statuses)


class FakeOrchestrator:
    """Serves submit/e-stop like a shard leader and publishes a TraceEvent and an agent pose periodically."""

    def __init__(self, ros: Any) -> None:
        from nav_msgs.msg import Odometry

        from fleet_interfaces.action import RunMission
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
        # What an rclpy ActionServer publishes on its feedback topic (type RunMission_FeedbackMessage).
        feedback_pub = self.node.create_publisher(RunMission.Impl.FeedbackMessage, FEEDBACK_TOPIC, qos.EVENTS)
        feedback = RunMission.Impl.FeedbackMessage()
        feedback.feedback.points_done, feedback.feedback.state = 3, 'RUNNING'
        event = TraceEvent(command_id='cmd-known', trace_id='trace-1', agent_id='a1_r001', shard_id='zone_1',
                           node='fake_orchestrator', hop=TraceEvent.HOP_DELIVER, attempt=1, status='SENT')  # fmt: skip
        odom = Odometry()
        odom.header.frame_id = 'map'
        odom.pose.pose.position.x = 1.5

        def tick() -> None:
            trace_pub.publish(event)
            odom_pub.publish(odom)
            feedback_pub.publish(feedback)

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


def start_bridge(ros: Any, tokens: dict[str, str] | None = None, **settings: Any) -> Any:
    from fleet_observability.foxglove_gate import GateSettings
    from fleet_observability.foxglove_server import FleetFoxgloveBridge, FoxgloveSettings
    from fleet_observability.foxglove_services import AccessPolicy

    node = ros.node('fleet_foxglove_test')
    bridge = FleetFoxgloveBridge(
        node,
        FoxgloveSettings(
            port=0,
            discovery_period_sec=0.1,
            time_period_sec=0.1,
            parameters={'fleet.sites': ['site_a']},
            gate=GateSettings(login_backoff_sec=LOGIN_BACKOFF_SEC),
            **settings,
        ),
        AccessPolicy(tokens=tokens or {}),
    )
    bridge.start()
    wait_for(
        lambda: (
            all(t in bridge.channels for t in (TRACE_TOPIC, ODOM_TOPIC, FEEDBACK_TOPIC))
            and SUBMIT in bridge.services
            and ESTOP in bridge.services
        ),
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

    from fleet_interfaces.action import RunMission
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
                {'op': 'subscribe', 'topic': FEEDBACK_TOPIC, 'count': 1},
                {'op': 'check_open'},
            ],
            tmp_path,
        )
        # The client has gone: its subscription is released again.
        wait_for(lambda: not bridge.following, 10.0, what='the bridge to drop the ROS subscription nobody watches')
        feedback_schema = bridge.channels[FEEDBACK_TOPIC]
    finally:
        bridge.close()
    trace_ch, odom_ch, sub, service, submit, estop, params, feedback, still_open = report['results']

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
    # Mission feedback (an action-derived type rosidl does not export by name) is followed and decodes.
    assert feedback_schema == 'fleet_interfaces/action/RunMission_FeedbackMessage'
    decoded_feedback = deserialize_message(
        bytes.fromhex(feedback['messages'][0]['hex']), RunMission.Impl.FeedbackMessage
    )
    assert (decoded_feedback.feedback.points_done, decoded_feedback.feedback.state) == (3, 'RUNNING')
    assert still_open['open']
    assert {'clientPublish', 'connectionGraph', 'time', 'services', 'parameters'} <= set(
        still_open['serverInfo']['capabilities']
    )


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


def test_connection_graph_and_server_time(spinning: Any, tmp_path: Path) -> None:
    ros, _ = spinning
    bridge = start_bridge(ros)
    try:
        before_ns = time.time_ns()
        report = run_client(
            bridge.port,
            [
                {'op': 'graph', 'topics': [TRACE_TOPIC, ODOM_TOPIC], 'services': [SUBMIT, ESTOP]},
                {'op': 'wait_time'},
            ],
            tmp_path,
        )
    finally:
        bridge.close()
    graph, server_time = report['results']
    published: dict[str, set[str]] = {}
    services: dict[str, set[str]] = {}
    for update in graph['updates']:
        for topic in update['publishedTopics']:
            published.setdefault(topic['name'], set()).update(topic['publisherIds'])
        for service in update['advertisedServices']:
            services.setdefault(service['name'], set()).update(service['providerIds'])
    assert published[TRACE_TOPIC] == {'/fake_orchestrator'}
    assert published[ODOM_TOPIC] == {'/fake_orchestrator'}
    assert services[SUBMIT] == {'/fake_orchestrator'}
    # The server's clock (ROS time of its node) is broadcast: the last stamp the client saw lies within this test.
    assert before_ns <= int(server_time['timestamp']) <= time.time_ns()


def test_tokens_hide_channels_until_login(spinning: Any, tmp_path: Path) -> None:
    ros, _ = spinning
    bridge = start_bridge(ros, tokens={OPERATOR_TOKEN: 'operator', VIEWER_TOKEN: 'viewer'})
    trace_id = bridge.channel_id(TRACE_TOPIC)
    request = submit_hex(agent_ids=['a1_r003'], kind='noop', args_json='{}', priority=1, ttl_sec=5.0)
    try:
        report = run_client(
            bridge.port,
            [
                # A round trip through the server first: whatever it advertises on connect has arrived by then.
                {'op': 'call', 'service': SUBMIT, 'encoding': 'cdr', 'hex': request},
                {'op': 'channels'},
                {'op': 'subscribe_id', 'channelId': trace_id},
                {'op': 'request_status', 'what': 'parameters'},
                {'op': 'request_status', 'what': 'graph'},
                login(VIEWER_TOKEN),
                {'op': 'wait_channel', 'topic': TRACE_TOPIC},
                {'op': 'subscribe', 'topic': TRACE_TOPIC, 'count': 2},
                {'op': 'get_parameters', 'names': ['fleet.sites']},
                {'op': 'channels'},
                {'op': 'messages_for'},
            ],
            tmp_path,
        )
    finally:
        bridge.close()
    anonymous_call, before, early_sub, params, graph, viewer, _trace, sub, params_after, after, early = report[
        'results'
    ]
    assert 'not logged in' in anonymous_call['failure']
    assert before['topics'] == []
    assert 'subscribe refused: not logged in' in messages(early_sub['statuses'])
    assert 'getParameters refused: not logged in' in messages(params['statuses'])
    assert params['parameterReplies'] == 0
    assert 'subscribeConnectionGraph refused: not logged in' in messages(graph['statuses'])
    assert graph['graphUpdates'] == 0
    assert viewer['reply'] == {'role': 'viewer'}
    assert sub['messages'][0]['firstString'] == 'cmd-known'
    assert params_after['parameters'] == [{'name': 'fleet.sites', 'value': ['site_a']}]
    assert {TRACE_TOPIC, ODOM_TOPIC, FEEDBACK_TOPIC} <= set(after['topics'])
    # The subscription refused before login never delivered anything, even after the login (while the one made
    # after the login received its messages).
    assert early['count'] == 0


def estop_hex(**fields: Any) -> str:
    from rclpy.serialization import serialize_message

    from fleet_interfaces.msg import EStop

    return bytes(serialize_message(EStop(**fields))).hex()


ESTOP_CHANNEL = {'op': 'advertise', 'topic': ESTOP_TOPIC, 'schemaName': 'fleet_interfaces/msg/EStop'}


def test_client_publish_follows_the_role(spinning: Any, tmp_path: Path) -> None:
    ros, orchestrator = spinning
    bridge = start_bridge(ros, tokens={OPERATOR_TOKEN: 'operator', VIEWER_TOKEN: 'viewer'})
    engage = {'engaged': True, 'reason': 'viewer tries'}
    try:
        as_viewer = run_client(
            bridge.port,
            [
                {**ESTOP_CHANNEL, 'encoding': 'json'},
                login(VIEWER_TOKEN),
                {**ESTOP_CHANNEL, 'encoding': 'json'},
                {**ESTOP_CHANNEL, 'topic': ODOM_TOPIC, 'schemaName': 'nav_msgs/msg/Odometry', 'encoding': 'cdr'},
                {'op': 'publish', 'channelId': 2, 'text': json.dumps(engage), 'status': 'dropped'},
            ],
            tmp_path,
        )
        as_operator = run_client(
            bridge.port,
            [
                login(OPERATOR_TOKEN),
                {**ESTOP_CHANNEL, 'encoding': 'cdr', 'timeoutMs': 0},
                {
                    'op': 'publish',
                    'channelId': 1,
                    'hex': estop_hex(engaged=True, reason='operator stop', issued_by='op-7'),
                    'status': 'e-stop engaged',
                },
                {**ESTOP_CHANNEL, 'encoding': 'json', 'timeoutMs': 0},
                {
                    'op': 'publish',
                    'channelId': 2,
                    'text': json.dumps({'engaged': False, 'reason': 'clear'}),
                    'status': 'e-stop released',
                },
                {**ESTOP_CHANNEL, 'topic': '/fleet/site_a/zone_1/journal', 'encoding': 'json'},
            ],
            tmp_path,
        )
    finally:
        bridge.close()
    anonymous, _, viewer_estop, viewer_odom, viewer_publish = as_viewer['results']
    assert 'not logged in' in messages(anonymous['statuses'])
    assert "role 'viewer' may not publish fleet_interfaces/msg/EStop" in messages(viewer_estop['statuses'])
    assert 'clients may not publish on this topic' in messages(viewer_odom['statuses'])
    assert 'message dropped' in messages(viewer_publish['statuses'])
    _, _, engaged, _, released, journal = as_operator['results']
    assert 'e-stop engaged on site_a/zone_1 by op-7 (revision 1)' in messages(engaged['statuses'])
    assert 'e-stop released on site_a/zone_1 by foxglove client' in messages(released['statuses'])
    assert 'clients may not publish on this topic' in messages(journal['statuses'])
    # Only the operator's two publications reached the shard leader, as set_estop calls.
    assert [(r.engage, r.reason, r.issued_by) for r in orchestrator.estops] == [
        (True, 'operator stop', 'op-7'),
        (False, 'clear', orchestrator.estops[1].issued_by),
    ]
    assert orchestrator.estops[1].issued_by.endswith('(operator)')


def test_wrong_tokens_are_slowed_down_then_disconnected(spinning: Any, tmp_path: Path) -> None:
    ros, _ = spinning
    bridge = start_bridge(ros, tokens={OPERATOR_TOKEN: 'operator'})
    wrong = login('not-the-token-0123456789')
    try:
        first = run_client(bridge.port, [wrong, wrong, wrong, {'op': 'wait_closed'}], tmp_path)
        # A new connection from the same address does not start afresh: its first login waits too.
        second = run_client(bridge.port, [login(OPERATOR_TOKEN), {'op': 'channels'}], tmp_path)
        third = run_client(bridge.port, [login(OPERATOR_TOKEN)], tmp_path)
    finally:
        bridge.close()
    one, two, three, closed = first['results']
    assert 'unknown token' in one['failure'] and '1 of 3 failed logins' in one['failure']
    assert two['elapsedMs'] >= LOGIN_BACKOFF_SEC * 1000
    assert three['elapsedMs'] >= 2 * LOGIN_BACKOFF_SEC * 1000
    assert 'closing the connection' in three['failure']
    assert (closed['code'], closed['reason']) == (1008, '3 failed logins')
    login_after, _ = second['results']
    assert login_after['reply'] == {'role': 'operator'}
    assert login_after['elapsedMs'] >= 4 * LOGIN_BACKOFF_SEC * 1000
    # The successful login cleared the address's record.
    assert third['results'][0]['elapsedMs'] < 4 * LOGIN_BACKOFF_SEC * 1000


def test_gate_limits_connections(spinning: Any) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    ros, _ = spinning
    bridge = start_bridge(ros, tokens={OPERATOR_TOKEN: 'operator'}, max_clients=1)
    url = f'ws://127.0.0.1:{bridge.port}'
    try:
        with connect(url, subprotocols=['foxglove.sdk.v1'], open_timeout=10) as first:
            assert json.loads(first.recv(timeout=10))['op'] == 'serverInfo'
            with (
                connect(url, subprotocols=['foxglove.sdk.v1'], open_timeout=10) as second,
                pytest.raises(ConnectionClosed) as closed,
            ):
                second.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            first.ping().wait(10)  # the first client is unaffected
        # Its slot is free again once it has gone.
        wait_for(lambda: bridge.gate_clients == 0, 10.0, what='the gate to release the first connection')
        with connect(url, subprotocols=['foxglove.sdk.v1'], open_timeout=10) as third:
            assert json.loads(third.recv(timeout=10))['op'] == 'serverInfo'
    finally:
        bridge.close()


@pytest.mark.parametrize('tokens', [False, True], ids=['sdk-tls', 'gate-tls'])
def test_tls(spinning: Any, tmp_path: Path, tokens: bool) -> None:
    from test_gateway_helpers import make_cert

    ros, _ = spinning
    cert, key = make_cert(tmp_path)
    bridge = start_bridge(ros, tokens={OPERATOR_TOKEN: 'operator'} if tokens else None, tls_cert=cert, tls_key=key)
    steps = [login(OPERATOR_TOKEN)] if tokens else []
    steps.append({'op': 'subscribe', 'topic': TRACE_TOPIC, 'count': 1})
    try:
        assert bridge.url.startswith('wss://')
        secure = run_client(bridge.port, steps, tmp_path, scheme='wss', ca=cert)
        plain = run_client(bridge.port, steps, tmp_path, scheme='ws', expect_error=True)
        untrusted = run_client(bridge.port, steps, tmp_path, scheme='wss', expect_error=True)
    finally:
        bridge.close()
    assert secure['results'][-1]['messages'][0]['firstString'] == 'cmd-known'
    assert plain['error'].startswith('connection closed before serverInfo') and plain['results'] == []
    assert untrusted['error'].startswith('connection closed before serverInfo') and untrusted['results'] == []


def test_node_parameters_and_remapping(ros: Any) -> None:
    from rclpy.parameter import Parameter

    from fleet_observability.foxglove_node import PARAMETERS, FoxgloveServerNode

    node = ros.add(
        FoxgloveServerNode(
            context=ros.context,
            cli_args=['--ros-args', '-r', '__node:=foxglove_a', '-r', '__ns:=/site_a', '-p', 'port:=0'],
            parameter_overrides=[Parameter('server_name', value='site a')],
        )
    )
    try:
        assert node.get_fully_qualified_name() == '/site_a/foxglove_a'
        assert node.settings.port == 0 and node.settings.host == '127.0.0.1' and node.settings.name == 'site a'
        for name, _, description, bounds in PARAMETERS:
            described = node.describe_parameter(name)
            assert described.read_only and described.description == description
            if bounds is not None:
                assert described.integer_range or described.floating_point_range
        refused = node.set_parameters([Parameter('port', value=9999)])[0]
        assert not refused.successful and node.get_parameter('port').value == 0
        node.bridge.start()
        assert node.bridge.url.startswith('ws://127.0.0.1:')
    finally:
        node.bridge.close()


def test_two_servers_on_one_domain(processes: Any, ros: Any) -> None:
    """Two site servers side by side: distinct names, namespaces and ports, both visible in the graph."""
    procs = [
        processes.start(
            [*SERVER, '--ros-args', '-r', f'__ns:=/{site}', '-p', 'port:=0'],
            name=f'foxglove_{site}',
        )
        for site in ('site_a', 'site_b')
    ]
    observer = ros.node('graph_observer')
    wait_for(
        lambda: all('listening on ws://127.0.0.1:' in p.output() for p in procs),
        20.0,
        what='both Foxglove servers to listen',
    )
    ros.spin_until(
        lambda: (
            {('fleet_foxglove', '/site_a'), ('fleet_foxglove', '/site_b')}
            <= set(observer.get_node_names_and_namespaces())
        ),
        10.0,
        what='both fleet_foxglove nodes in the ROS graph',
    )
    urls = {p.output().split('listening on ')[1].split()[0] for p in procs}
    assert len(urls) == 2
    # The console script spins its node: it answers a parameter request.
    from rcl_interfaces.srv import GetParameters

    client = observer.create_client(GetParameters, '/site_a/fleet_foxglove/get_parameters')
    ros.spin_until(client.service_is_ready, 10.0, what='the parameter service of /site_a/fleet_foxglove')
    reply = ros.call(lambda: client.call_async(GetParameters.Request(names=['port'])), 30, 'a parameter answer')
    assert [v.integer_value for v in reply.values] == [0]
    for proc in procs:
        assert proc.stop() == 0, proc.log_path.read_text()
        assert 'Traceback' not in proc.log_path.read_text()


def test_public_bind_without_tokens_is_refused(ros_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, '-m', 'fleet_observability.foxglove_server', '--host', '0.0.0.0', '--port', '0'],  # noqa: S104 - refusal tested
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(ros_env),
        check=False,
    )
    assert done.returncode == 2
    assert 'refusing to bind the Foxglove server to 0.0.0.0 without tokens' in done.stderr


@pytest.mark.parametrize('tokens', [False, True], ids=['sdk', 'gate'])
def test_unusable_tls_files_are_a_usage_error(ros_env: dict[str, str], tmp_path: Path, tokens: bool) -> None:
    (tmp_path / 'junk.pem').write_text('not a certificate')
    (tmp_path / 'tokens.yaml').write_text(f'{OPERATOR_TOKEN}: operator\n')
    args = ['--port', '0', '--tls-cert', str(tmp_path / 'junk.pem'), '--tls-key', str(tmp_path / 'junk.pem')]
    if tokens:
        args += ['--tokens', str(tmp_path / 'tokens.yaml')]
    done = subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=60, env=dict(ros_env), check=False)
    assert done.returncode == 2, done.stderr
    expected = 'cannot load TLS certificate' if tokens else 'cannot start the Foxglove server on 127.0.0.1:0'
    assert f'fleet_foxglove: error: {expected}' in done.stderr
    assert 'Traceback' not in done.stderr


def test_public_bind_rejected_in_process() -> None:
    from fleet_observability.foxglove_services import AccessConfigError, AccessPolicy

    with pytest.raises(AccessConfigError, match='--tokens'):
        AccessPolicy().check_bind('10.1.2.3')
    AccessPolicy(tokens={OPERATOR_TOKEN: 'operator'}).check_bind('10.1.2.3')
    AccessPolicy().check_bind('::1')
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'

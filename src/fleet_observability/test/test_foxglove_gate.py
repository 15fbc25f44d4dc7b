"""The Foxglove access gate's sans-I/O core: what a client is shown and may do before and after its login, and the
failed-login throttle, fed frame by frame with an injected clock (the node client tests cover the same over sockets).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from fleet_observability.foxglove_gate import (
    CLOSE_POLICY_VIOLATION,
    Close,
    GateSession,
    GateSettings,
    LoginThrottle,
    ToClient,
    ToUpstream,
)
from fleet_observability.foxglove_services import AccessPolicy
from fleet_observability.ros2msg import SchemaLibrary, SchemaNotFound

TOKENS = {'operator-token-0123456789': 'operator', 'viewer-token-0123456789ab': 'viewer'}
LOGIN_ID = 7
CHANNEL = {'id': 3, 'topic': '/fleet/s/z/journal', 'encoding': 'cdr', 'schemaName': 'x/msg/Y', 'schema': ''}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_session(settings: GateSettings | None = None, clock: Clock | None = None) -> GateSession:
    settings = settings or GateSettings(login_backoff_sec=1.0, login_backoff_max_sec=3.0, failure_memory_sec=60.0)
    throttle = LoginThrottle(settings, clock=clock or Clock())
    session = GateSession(peer='10.0.0.9', policy=AccessPolicy(tokens=TOKENS), settings=settings, throttle=throttle)
    services = {'op': 'advertiseServices', 'services': [{'id': LOGIN_ID, 'name': '/fleet/login', 'type': 'Login'}]}
    assert session.upstream_text(json.dumps(services)) == [ToClient(json.dumps(services))]
    return session


def login_call(call_id: int) -> bytes:
    return struct.pack('<BIII', 2, LOGIN_ID, call_id, 4) + b'json' + b'{"token": "x"}'


def login_response(call_id: int, role: str) -> bytes:
    return struct.pack('<BIII', 3, LOGIN_ID, call_id, 4) + b'json' + json.dumps({'role': role}).encode()


def login_failure(call_id: int) -> str:
    return json.dumps({'op': 'serviceCallFailure', 'serviceId': LOGIN_ID, 'callId': call_id, 'message': 'unknown'})


def statuses(effects: list[Any]) -> list[str]:
    return [json.loads(e.data)['message'] for e in effects if isinstance(e, ToClient) and '"status"' in str(e.data)]


def test_channels_are_held_back_until_a_login_succeeds() -> None:
    session = make_session()
    advertise = json.dumps({'op': 'advertise', 'channels': [CHANNEL]})
    assert session.upstream_text(advertise) == []
    assert session.upstream_binary(b'\x01' + bytes(16)) == []  # message data never reaches a stranger
    assert session.client_binary(login_call(1)) == [ToUpstream(login_call(1))]
    effects = session.upstream_binary(login_response(1, 'viewer'))
    assert effects[0] == ToClient(login_response(1, 'viewer'))
    assert json.loads(effects[1].data) == {'op': 'advertise', 'channels': [CHANNEL]}
    assert session.role == 'viewer'
    assert session.upstream_text(advertise) == [ToClient(advertise)]


@pytest.mark.parametrize(
    'op', ['subscribe', 'getParameters', 'setParameters', 'subscribeParameterUpdates', 'subscribeConnectionGraph']
)
def test_viewer_requests_are_refused_before_login(op: str) -> None:
    session = make_session()
    request = json.dumps({'op': op})
    effects = session.client_text(request)
    assert statuses(effects) == [f'{op} refused: not logged in; call /fleet/login with {{"token": "..."}} first']
    session.client_binary(login_call(1))
    session.upstream_binary(login_response(1, 'viewer'))
    assert session.client_text(request) == [ToUpstream(request)]


def test_client_publish_needs_the_role_and_an_accepted_channel() -> None:
    session = make_session()
    estop = {'id': 1, 'topic': '/fleet/s/z/estop', 'encoding': 'json', 'schemaName': 'fleet_interfaces/msg/EStop'}
    advertise = json.dumps({'op': 'advertise', 'channels': [estop]})
    assert 'not logged in' in statuses(session.client_text(advertise))[0]
    session.client_binary(login_call(1))
    session.upstream_binary(login_response(1, 'viewer'))
    assert "role 'viewer' may not publish" in statuses(session.client_text(advertise))[0]
    assert 'message dropped' in statuses(session.client_binary(b'\x01\x01\x00\x00\x00{}'))[0]
    session.client_binary(login_call(2))
    session.upstream_binary(login_response(2, 'operator'))
    assert session.client_text(advertise) == [ToUpstream(advertise)]
    assert session.client_binary(b'\x01\x01\x00\x00\x00{}') == [ToUpstream(b'\x01\x01\x00\x00\x00{}')]


def test_failed_logins_wait_longer_each_time_then_close() -> None:
    session = make_session()
    delays = []
    for call_id in (1, 2, 3):
        (forward,) = session.client_binary(login_call(call_id))
        assert isinstance(forward, ToUpstream)
        delays.append(forward.delay_sec)
        effects = session.upstream_text(login_failure(call_id))
    assert delays == [0.0, 1.0, 2.0]
    assert effects[-1] == Close(CLOSE_POLICY_VIOLATION, '3 failed logins')
    assert 'closing the connection' in json.loads(effects[0].data)['message']


def test_one_login_in_flight_per_connection() -> None:
    session = make_session()
    assert isinstance(session.client_binary(login_call(1))[0], ToUpstream)
    (refused,) = session.client_binary(login_call(2))
    assert 'already in progress' in json.loads(refused.data)['message']


def test_throttle_is_per_peer_capped_and_forgets() -> None:
    clock = Clock()
    settings = GateSettings(login_backoff_sec=1.0, login_backoff_max_sec=3.0, failure_memory_sec=60.0)
    throttle = LoginThrottle(settings, clock=clock)
    for _ in range(5):
        throttle.failed('a')
    assert throttle.delay('a') == 3.0
    assert throttle.delay('b') == 0.0
    clock.now += 61.0
    assert throttle.delay('a') == 0.0
    throttle.failed('a')
    throttle.succeeded('a')
    assert throttle.delay('a') == 0.0


def test_action_derived_schemas() -> None:
    texts = {
        ('pkg', 'action', 'Go'): 'int32 target\n---\nbool ok\n---\nfloat64 progress\n',
        ('unique_identifier_msgs', 'msg', 'UUID'): 'uint8[16] uuid\n',
    }

    def reader(package: str, kind: str, name: str) -> str:
        try:
            return texts[(package, kind, name)]
        except KeyError:
            raise SchemaNotFound(f'{package}/{kind}/{name}') from None

    library = SchemaLibrary(reader)
    feedback = library.message('pkg/action/Go_FeedbackMessage')
    assert feedback.startswith('unique_identifier_msgs/UUID goal_id\npkg/Go_Feedback feedback\n')
    assert 'MSG: pkg/Go_Feedback\nfloat64 progress\n' in feedback
    assert library.message('pkg/action/Go_Result') == 'bool ok\n'
    with pytest.raises(SchemaNotFound):
        library.message('pkg/action/Go')

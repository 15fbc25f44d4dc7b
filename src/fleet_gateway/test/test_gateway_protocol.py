"""Pure tests of the gateway core: conversion, sessions and handlers, send queue, fragments, ACL, config."""

from __future__ import annotations

import json
import math
import time

import pytest

from fleet_gateway.acl import PROTECTED_TOPICS, AccessPolicy, Action, GlobSet, Principal, Role, RolePolicy
from fleet_gateway.config import ConfigError, load_acl, load_gateway_config, load_tokens
from fleet_gateway.conversion import (
    ConversionError,
    UnknownType,
    action_class,
    codec_for,
    message_class,
    service_class,
)
from fleet_gateway.protocol import (
    AdvertiseAction,
    AdvertiseService,
    AdvertiseTopic,
    CallService,
    CancelActionGoal,
    ClientSession,
    OutFrame,
    PublishedMessage,
    PublishMessage,
    SendActionGoal,
    SendQueue,
    ServedGoalFeedback,
    ServedGoalResult,
    ServiceReply,
    SessionLimits,
    SubscribeTopic,
    UnadvertiseAction,
    UnadvertiseService,
    UnsubscribeTopic,
)


def policy() -> AccessPolicy:
    everything = GlobSet(['/**'])
    operator = RolePolicy(
        Role.OPERATOR,
        everything,
        everything,
        everything,
        GlobSet(['/served/**']),
        GlobSet(['/fleet/*/*/estop']),
        send_action_goal=GlobSet(['/act/**']),
        advertise_action=GlobSet(['/served/**']),
    )
    viewer = RolePolicy(Role.VIEWER, GlobSet([]), GlobSet(['/fleet/**']), GlobSet([]), GlobSet([]), GlobSet([]))
    return AccessPolicy(
        {Role.OPERATOR: operator, Role.VIEWER: viewer}, GlobSet(PROTECTED_TOPICS), GlobSet(PROTECTED_TOPICS)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def session(role: Role | None = Role.OPERATOR, **limits: object) -> ClientSession:
    principal = Principal('tester', role) if role else None
    tokens = {'good-token-0123456789': Principal('late', Role.OPERATOR)}
    return ClientSession(
        'c1',
        policy=policy(),
        principal=principal,
        limits=SessionLimits(**limits),  # type: ignore[arg-type]  # keyword overrides of the limits
        authenticate=tokens.get,
        clock=Clock(),
    )


def sent(s: ClientSession) -> list[dict]:
    return [json.loads(f.data) for f in s.outbox.pop_batch(10**9)]


def send(s: ClientSession, **message: object) -> list:
    return s.receive_text(json.dumps(message))


# --- conversion -------------------------------------------------------------------------------------------


def test_conversion_round_trips_nested_arrays_time_and_defaults():
    from fleet_interfaces.msg import ShardStatus

    codec = codec_for(ShardStatus)
    msg = codec.from_json(
        {
            'site_id': 'a',
            'stamp': {'sec': 5, 'nanosec': 7},
            'lost_agent_ids': ['r1', 'r2'],
            'queue_depth': [1, 2, 3, 4],
            'ack_latency_p99_ms': None,
        }
    )
    assert msg.stamp.sec == 5 and list(msg.queue_depth) == [1, 2, 3, 4] and math.isnan(msg.ack_latency_p99_ms)
    assert msg.shard_id == '' and msg.epoch == 0  # defaults kept
    out = codec.to_json(msg)
    assert out['queue_depth'] == [1, 2, 3, 4] and out['lost_agent_ids'] == ['r1', 'r2']
    assert out['ack_latency_p99_ms'] is None and out['stamp'] == {'sec': 5, 'nanosec': 7}
    json.dumps(out, allow_nan=False)


def test_conversion_bytes_are_base64_and_accept_lists():
    from std_msgs.msg import ByteMultiArray, UInt8MultiArray

    u8 = codec_for(UInt8MultiArray)
    assert u8.to_json(u8.from_json({'data': 'AQID'}))['data'] == 'AQID'
    assert list(u8.from_json({'data': [1, 2, 3]}).data) == [1, 2, 3]
    octets = codec_for(ByteMultiArray)
    assert octets.to_json(octets.from_json({'data': [0, 255]}))['data'] == 'AP8='
    with pytest.raises(ConversionError, match='data'):
        u8.from_json({'data': [256]})
    with pytest.raises(ConversionError, match='base64'):
        u8.from_json({'data': '***'})


def test_conversion_rejects_wrong_types_with_field_path():
    from fleet_interfaces.msg import ShardStatus

    codec = codec_for(ShardStatus)
    with pytest.raises(ConversionError, match=r'stamp\.sec'):
        codec.from_json({'stamp': {'sec': 'x'}})
    with pytest.raises(ConversionError, match='exactly 4'):
        codec.from_json({'queue_depth': [1]})
    with pytest.raises(ConversionError, match='out of range'):
        codec.from_json({'agents_total': -1})
    with pytest.raises(ConversionError, match='no field'):
        codec.from_json({'nope': 1})
    with pytest.raises(ConversionError, match='boolean'):
        codec_for(message_class('std_msgs/Bool')).from_json({'data': 'yes'})


def test_conversion_time_accepts_ros1_names_and_type_names_are_checked():
    from builtin_interfaces.msg import Time

    assert codec_for(Time).from_json({'secs': 3, 'nsecs': 4}) == Time(sec=3, nanosec=4)
    assert message_class('std_msgs/msg/String') is message_class('std_msgs/String')
    assert service_class('std_srvs/srv/Trigger') is service_class('std_srvs/Trigger')
    for bad in ('std_msgs', 'nope_pkg/Foo', 'std_msgs/NoSuch', '../x/y', 'std_msgs/srv/String', 42):
        with pytest.raises(UnknownType):
            message_class(bad)


# --- session and handlers ---------------------------------------------------------------------------------


def test_advertise_publish_and_errors_carry_request_id():
    s = session()
    assert send(s, op='advertise', id='a', topic='/chat', type='std_msgs/String') == [
        AdvertiseTopic('/chat', message_class('std_msgs/String'))
    ]
    events = send(s, op='publish', topic='chat', msg={'data': 'hi'})
    from rclpy.serialization import deserialize_message

    assert isinstance(events[0], PublishMessage) and events[0].topic == '/chat'
    assert deserialize_message(events[0].msg, message_class('std_msgs/String')).data == 'hi'  # flat: CDR bytes
    send(s, op='publish', id='p1', topic='/other', msg={})
    send(s, op='publish', id='p2', topic='/chat', msg={'data': 5})
    send(s, op='subscribe', id='s1', topic='/x', type='nope/Msg')
    send(s, op='bogus', id=7)
    send(s, op='subscribe', id='s2', topic='/bad name!', type='std_msgs/String')
    s.receive_text('{not json')
    s.receive_text('[1, 2]')
    s.receive_bytes(b'\x00\xff')
    statuses = sent(s)
    assert all(m['op'] == 'status' and m['level'] == 'error' for m in statuses)
    assert [m.get('id') for m in statuses] == ['p1', 'p2', 's1', 7, 's2', None, None, None]
    assert 'advertise /other' in statuses[0]['msg'] and 'data' in statuses[1]['msg']


def test_roles_deny_by_default_for_command_topics():
    s = session()
    send(s, op='advertise', id='cmd', topic='/site_a/robot_1/command', type='fleet_interfaces/Command')
    assert 'may not publish' in sent(s)[0]['msg']
    assert send(s, op='advertise', id='e', topic='/fleet/a/z/estop', type='fleet_interfaces/EStop')
    v = session(Role.VIEWER)
    send(v, op='advertise', id='v1', topic='/fleet/a/z/status', type='fleet_interfaces/ShardStatus')
    send(v, op='call_service', id='v2', service='/fleet/a/z/submit', type='std_srvs/Trigger')
    assert send(v, op='subscribe', id='v3', topic='/fleet/a/z/status', type='fleet_interfaces/ShardStatus')
    send(v, op='subscribe', id='v4', topic='/site_a/r/odom', type='std_msgs/String')
    assert [m['id'] for m in sent(v)] == ['v1', 'v2', 'v4']


def test_unauthenticated_session_needs_auth_op():
    s = session(role=None, max_auth_failures=2)
    send(s, op='subscribe', id='s', topic='/t', type='std_msgs/String')
    send(s, op='auth', id='a1', token='wrong')
    assert [m['id'] for m in sent(s)] == ['s', 'a1']
    send(s, op='auth', id='a2', mac='good-token-0123456789')
    assert s.principal is not None and s.close_request is None
    s2 = session(role=None, max_auth_failures=2)
    send(s2, op='auth', token='x')
    send(s2, op='auth', token='y')
    assert s2.close_request is not None and s2.close_request.code == 1008


def test_unauthenticated_session_is_closed_at_its_auth_deadline():
    s = session(role=None, auth_timeout_s=2.0)
    clock = s.clock
    assert s.next_wake() == pytest.approx(102.0)
    clock.now = 101.9  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    s.poll(clock())
    assert s.close_request is None
    clock.now = 102.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    s.poll(clock())
    assert s.close_request is not None and s.close_request.code == 1008
    assert 'not authenticated within 2 s' in s.close_request.reason
    late = session(role=None, auth_timeout_s=2.0)
    send(late, op='auth', token='good-token-0123456789')
    assert late.next_wake() is None  # authenticated in time: no deadline any more
    late.clock.now = 200.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    late.poll(late.clock())
    assert late.close_request is None
    assert session().next_wake() is None  # authenticated at the handshake: no deadline at all


def test_throttled_auth_op_is_refused_unchecked_and_closes():
    from fleet_gateway.protocol.fields import AuthThrottled

    checked = []

    def authenticate(token: str) -> Principal | None:
        checked.append(token)
        raise AuthThrottled('too many failed authentications from this address')

    s = ClientSession('c1', policy=policy(), authenticate=authenticate, clock=Clock())
    send(s, op='auth', id='a', token='good-token-0123456789')
    assert s.principal is None and s.close_request is not None and s.close_request.code == 1008
    assert 'too many failed' in sent(s)[0]['msg']


def test_failure_limiter_per_address_burst_then_rate():
    from fleet_gateway.ratelimit import FailureLimiter

    clock = Clock()
    limiter = FailureLimiter(rate=0.5, burst=3, max_addresses=2, clock=clock)
    for _ in range(3):
        assert limiter.retry_after('10.0.0.1') == 0
        limiter.record('10.0.0.1')
    assert limiter.retry_after('10.0.0.1') == pytest.approx(2.0)
    assert limiter.retry_after('10.0.0.2') == 0  # another address is not affected
    clock.now += 2.0
    assert limiter.retry_after('10.0.0.1') == 0  # one more failure allowed after 1 / rate
    limiter.record('10.0.0.1')
    assert limiter.retry_after('10.0.0.1') == pytest.approx(2.0)
    limiter.record('10.0.0.2')
    limiter.record('10.0.0.3')  # beyond max_addresses: the least recently failing one is forgotten
    assert limiter.retry_after('10.0.0.1') == 0


def test_subscribe_merges_ids_and_unsubscribe_releases():
    s = session()
    assert send(s, op='subscribe', id='a', topic='/t', type='std_msgs/String', throttle_rate=100)
    assert send(s, op='subscribe', id='b', topic='/t', type='std_msgs/String') == []
    assert s.subscriptions['/t'].throttle_s == 0.0
    assert send(s, op='unsubscribe', id='a', topic='/t') == []
    assert send(s, op='unsubscribe', topic='/t') == [UnsubscribeTopic('/t')]
    send(s, op='subscribe', id='c', topic='/t', type='std_msgs/String', compression='png')
    assert 'not supported' in sent(s)[0]['msg']


def test_throttle_and_queue_length_keep_latest():
    s = session()
    clock = s.clock
    send(s, op='subscribe', id='a', topic='/t', type='std_msgs/String', throttle_rate=1000, queue_length=1)
    for i in range(5):
        s.deliver(PublishedMessage('/t', {'data': str(i)}, critical=False), clock())
    assert [m['msg']['data'] for m in sent(s)] == ['0']
    assert s.next_wake() == pytest.approx(101.0)
    clock.now = 101.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    s.poll(clock())
    assert [m['msg']['data'] for m in sent(s)] == ['4']
    assert s.counters['throttle_dropped'] == 3


def test_slow_client_drops_oldest_telemetry_reports_it_and_keeps_critical():
    s = session(send_queue_frames=10, critical_queue_bytes=10_000)
    send(s, op='subscribe', id='a', topic='/t', type='std_msgs/String')
    send(s, op='subscribe', id='b', topic='/fleet/a/z/estop', type='fleet_interfaces/EStop')
    for i in range(100):  # telemetry (a best-effort topic: an expiry, here none): may be dropped
        s.deliver(PublishedMessage('/t', {'data': str(i)}, critical=False, max_age_s=math.inf), s.clock())
    for i in range(3):
        s.deliver(PublishedMessage('/fleet/a/z/estop', {'revision': i}, critical=True), s.clock())
    out = sent(s)
    data = [m['msg']['data'] for m in out if m.get('topic') == '/t']
    assert data == [str(i) for i in range(90, 100)]
    assert [m['msg']['revision'] for m in out if m.get('topic') == '/fleet/a/z/estop'] == [0, 1, 2]
    warnings = [m for m in out if m['op'] == 'status']
    assert warnings and 'dropped' in warnings[0]['msg'] and s.stats()['dropped'] == 90
    for i in range(1000):  # a client that never reads critical traffic is closed, never silently dropped
        s.deliver(PublishedMessage('/fleet/a/z/estop', {'revision': i}, critical=True), s.clock())
        if s.close_request:
            break
    assert s.close_request is not None and s.close_request.code == 1013
    assert s.outbox.bytes <= 10_000 + 200


def test_slow_client_on_a_reliable_topic_gets_every_message_in_order_or_is_closed():
    """A reliable topic's messages are never dropped, whatever the telemetry bounds (10 frames here): a client that
    falls behind gets them all, in order, one batch or one message at a time; one that never reads is closed (1013)
    once they exceed `send_queue_bytes`, and what it was sent until then has no gap."""
    for batched in (False, True):
        s = session(send_queue_frames=10, send_queue_bytes=20_000)
        send(s, op='subscribe', id='r', topic='/events', type='std_msgs/String')
        s.backlog_keep, s.backlog_rate = 2, 10.0  # the transport says it is behind: telemetry would be capped
        messages = [PublishedMessage('/events', {'data': str(i)}, critical=False) for i in range(100)]
        if batched:
            s.deliver_batch('/events', messages, s.clock())
        else:
            for published in messages:
                s.deliver(published, s.clock())
        out = sent(s)
        assert [m['msg']['data'] for m in out if m['op'] == 'publish'] == [str(i) for i in range(100)], batched
        assert not [m for m in out if m['op'] == 'status'] and s.stats()['dropped'] == 0
        n = 100
        while s.close_request is None and n < 10_000:  # the client reads nothing any more
            batch = [PublishedMessage('/events', {'data': str(n + i)}, critical=False) for i in range(10)]
            if batched:
                s.deliver_batch('/events', batch, s.clock())
            else:
                for published in batch:
                    s.deliver(published, s.clock())
            n += 10
        assert s.close_request is not None and s.close_request.code == 1013, batched
        assert 'never dropped' in s.close_request.reason and s.stats()['dropped'] == 0
        queued = [m['msg']['data'] for m in sent(s) if m['op'] == 'publish']
        assert queued == [str(i) for i in range(100, 100 + len(queued))] and 300 < len(queued) < n - 100


def test_send_queue_per_key_limit_and_bounds():
    q = SendQueue(max_frames=100, max_bytes=1000, critical_max_bytes=100)
    for i in range(50):
        q.put(OutFrame(f'{i:04d}'), key='k', key_limit=3)
    assert [f.data for f in q.pop_batch(10**6)] == ['0047', '0048', '0049'] and q.drops['k'] == 47
    for i in range(1000):
        q.put(OutFrame('x' * 20, expires=math.inf), key=i % 7)
    assert q.bytes <= 1000 and len(q) == 50


def test_fragments_reassemble_and_expire():
    s = session(fragment_timeout_s=5.0)
    text = json.dumps({'op': 'subscribe', 'id': 'inner', 'topic': '/t', 'type': 'std_msgs/String'})
    parts = [text[i : i + 10] for i in range(0, len(text), 10)]
    events = []
    for n, part in reversed(list(enumerate(parts))):
        events += send(s, op='fragment', id='f1', data=part, num=n, total=len(parts))
    assert events == [SubscribeTopic('/t', message_class('std_msgs/String'))]
    send(s, op='fragment', id='f2', data='{"op"', num=0, total=3)
    s.clock.now += 6  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    s.poll(s.clock())
    assert sent(s)[0]['id'] == 'f2' and len(s.fragments) == 0


def test_call_service_events_and_results():
    s = session(max_pending_calls=1)
    (event,) = send(s, op='call_service', id='q', service='/trig', type='std_srvs/Trigger', args=[])
    assert isinstance(event, CallService) and event.timeout_s == 10.0
    send(s, op='call_service', id='q2', service='/trig', type='std_srvs/Trigger')
    assert 'in flight' in sent(s)[0]['msg']
    response = service_class('std_srvs/Trigger').Response(success=True, message='ok')
    s.service_result(event.call_no, response)
    assert sent(s) == [
        {
            'op': 'service_response',
            'service': '/trig',
            'id': 'q',
            'values': {'success': True, 'message': 'ok'},
            'result': True,
        }
    ]
    (event,) = send(s, op='call_service', id='q3', service='/trig', type='std_srvs/Trigger')
    s.service_result(event.call_no, None, 'timed out')
    assert sent(s)[0]['result'] is False


def test_finish_releases_everything():
    s = session()
    send(s, op='subscribe', topic='/t', type='std_msgs/String')
    send(s, op='advertise', topic='/u', type='std_msgs/String')
    events = s.finish()
    assert {type(e).__name__ for e in events} == {'UnsubscribeTopic', 'UnadvertiseTopic'}
    assert s.finish() == [] and not s.subscriptions and len(s.outbox) == 0


# --- services served by a client (advertise_service / call_service out / service_response) ---------------


def _served(s: ClientSession, service: str = '/served/flag', srv: str = 'std_srvs/SetBool') -> list:
    events = send(s, op='advertise_service', id='adv', service=service, type=srv)
    assert events == [AdvertiseService(service, service_class(srv), 'adv')]
    return events


def test_advertise_service_forwards_ros_calls_and_relays_the_response():
    s = session()
    _served(s)
    set_bool = service_class('std_srvs/SetBool')
    assert s.service_request('/served/flag', 7, set_bool.Request(data=True)) == []
    assert s.service_request('/served/flag', 8, set_bool.Request(data=False)) == []
    first, second = sent(s)
    assert first['op'] == 'call_service' and first['service'] == '/served/flag' and first['args'] == {'data': True}
    assert second['args'] == {'data': False} and first['id'] != second['id']  # a fresh id per call
    assert first['id'].startswith('service_request:/served/flag:')  # rosbridge's form of these ids
    (reply,) = send(
        s, op='service_response', id=second['id'], service='/served/flag', values={'success': True}, result=True
    )
    assert reply == ServiceReply('/served/flag', 8, set_bool.Response(success=True))
    (reply,) = send(s, op='service_response', id=first['id'], values='no such flag', result=False)
    assert reply.token == 7 and reply.response is None and 'no such flag' in reply.error
    assert s.stats()['served'] == 1 and not s.incoming_calls
    assert sent(s) == []


def test_service_response_unknown_duplicate_mismatched_and_badly_typed():
    s = session()
    _served(s)
    s.service_request('/served/flag', 1, service_class('std_srvs/SetBool').Request())
    (call,) = sent(s)
    assert send(s, op='service_response', values={}, result=True) == []
    assert 'needs the "id"' in sent(s)[0]['msg']
    assert send(s, op='service_response', id='call_service:/nope:1', values={}, result=True) == []
    assert 'no call with id' in sent(s)[0]['msg']
    assert send(s, op='service_response', id=call['id'], service='/served/other', values={}) == []
    assert 'is for /served/flag' in sent(s)[0]['msg']
    assert send(s, op='service_response', id=call['id'], values={}, result='yes') == []
    assert 'true or false' in sent(s)[0]['msg']
    # values that do not fit the type: the client is told, the ROS caller gets a failed response at once
    (reply,) = send(s, op='service_response', id=call['id'], values={'success': 'very'}, result=True)
    assert reply.token == 1 and reply.response is None
    (error,) = sent(s)
    assert error['id'] == call['id'] and 'success' in error['msg'] and 'failed response' in error['msg']
    # answering the same id again: it is gone
    assert send(s, op='service_response', id=call['id'], values={'success': True}, result=True) == []
    assert 'no call with id' in sent(s)[0]['msg']


def test_advertise_service_acl_types_duplicates_and_unadvertise():
    s = session()
    send(s, op='advertise_service', id='x', service='/elsewhere/flag', type='std_srvs/SetBool')
    assert 'may not advertise service /elsewhere/flag' in sent(s)[0]['msg']
    send(s, op='advertise_service', id='x', service='/served/flag', type='std_msgs/String')
    assert sent(s)[0]['level'] == 'error'
    send(s, op='advertise_service', id='x', service='/served/flag')
    assert 'missing required field "type"' in sent(s)[0]['msg']
    viewer = session(Role.VIEWER)
    send(viewer, op='advertise_service', id='v', service='/served/flag', type='std_srvs/SetBool')
    assert 'may not' in sent(viewer)[0]['msg']
    _served(s)
    assert send(s, op='advertise_service', id='again', service='/served/flag', type='std_srvs/SetBool') == []
    send(s, op='advertise_service', id='other', service='/served/flag', type='std_srvs/Trigger')
    assert 'another type' in sent(s)[0]['msg']
    s.service_request('/served/flag', 3, service_class('std_srvs/SetBool').Request())
    (call,) = sent(s)
    assert send(s, op='unadvertise_service', id='u', service='/served/flag') == [UnadvertiseService('/served/flag')]
    assert not s.incoming_calls  # the ROS side answers the waiting callers when it destroys the service
    send(s, op='service_response', id=call['id'], values={}, result=True)
    assert 'no call with id' in sent(s)[0]['msg']
    send(s, op='unadvertise_service', id='u2', service='/served/flag')
    assert 'not advertised by this client' in sent(s)[0]['msg']
    (reply,) = s.service_request('/served/flag', 4, service_class('std_srvs/SetBool').Request())
    assert reply.response is None and reply.token == 4


def test_served_calls_time_out_and_are_bounded():
    s = session(served_call_timeout_s=2.0, max_served_calls=2)
    _served(s)
    request = service_class('std_srvs/SetBool').Request()
    assert s.service_request('/served/flag', 1, request) == []
    s.clock.now += 1.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    assert s.service_request('/served/flag', 2, request) == []
    (busy,) = s.service_request('/served/flag', 3, request)
    assert busy.token == 3 and busy.response is None and 'in flight' in busy.error
    first, second = sent(s)
    assert s.next_wake() == pytest.approx(102.0)
    s.clock.now = 102.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    (timed_out,) = s.poll(s.clock())
    assert timed_out.token == 1 and timed_out.response is None and 'no response within 2 s' in timed_out.error
    assert sent(s)[0]['id'] == first['id']  # the client is told its answer would come too late
    assert s.next_wake() == pytest.approx(103.0)
    (reply,) = send(s, op='service_response', id=second['id'], values={'success': True}, result=True)
    assert reply.token == 2 and reply.response.success is True
    assert s.next_wake() is None and s.stats()['served_failed'] == 2


def test_finish_unadvertises_served_services():
    s = session()
    _served(s)
    _served(s, '/served/trigger', 'std_srvs/Trigger')
    s.service_request('/served/flag', 1, service_class('std_srvs/SetBool').Request())
    events = s.finish()
    assert set(events) == {UnadvertiseService('/served/flag'), UnadvertiseService('/served/trigger')}
    assert not s.incoming_calls and not s.served
    (reply,) = s.service_request('/served/flag', 2, service_class('std_srvs/SetBool').Request())
    assert reply.response is None


def test_failed_response_carries_the_reason_when_the_type_has_a_message():
    from fleet_gateway.ros.served_services import failed_response

    response = failed_response(service_class('std_srvs/Trigger'), 'client gone')
    assert response.success is False and response.message == 'client gone'
    empty = failed_response(service_class('std_srvs/Empty'), 'client gone')
    assert type(empty).__name__ == 'Empty_Response'


# --- action goals (send_action_goal / action_feedback / action_result / cancel_action_goal) ----------------

RUN_MISSION = 'fleet_interfaces/action/RunMission'


def _goal(s: ClientSession, rid: object = 'g1', **extra: object) -> SendActionGoal:
    message = {'op': 'send_action_goal', 'action': '/act/mission', 'action_type': RUN_MISSION, **extra}
    if rid is not None:
        message['id'] = rid
    (event,) = s.receive_text(json.dumps(message))
    assert isinstance(event, SendActionGoal)
    return event


def test_send_action_goal_relays_feedback_and_result():
    s = session(action_server_wait_s=3.5)
    run_mission = action_class(RUN_MISSION)
    event = _goal(
        s, args={'mission_id': 'm1', 'point_ids': ['p1', 'p2'], 'point_xy': [1.0, 2.0, 3.0, 4.0]}, feedback=True
    )
    assert event.action == '/act/mission' and event.action_cls is run_mission and event.feedback is True
    assert event.goal == run_mission.Goal(mission_id='m1', point_ids=['p1', 'p2'], point_xy=[1.0, 2.0, 3.0, 4.0])
    assert event.server_wait_s == 3.5 and sent(s) == []
    s.action_feedback(event.goal_no, run_mission.Feedback(points_done=1, points_total=2, state='RUNNING'))
    (feedback,) = sent(s)
    assert feedback == {
        'op': 'action_feedback',
        'action': '/act/mission',
        'id': 'g1',
        'values': {
            'points_done': 1,
            'points_total': 2,
            'agents_active': 0,
            'agents_lost': 0,
            'handoffs': 0,
            'state': 'RUNNING',
        },
    }
    s.action_result(event.goal_no, 4, run_mission.Result(success=True, points_done=2, points_total=2))
    (result,) = sent(s)
    assert result['op'] == 'action_result' and result['id'] == 'g1' and result['action'] == '/act/mission'
    assert result['status'] == 4 and result['result'] is True
    assert result['values']['success'] is True and result['values']['points_done'] == 2
    # once per goal: a second result, or late feedback, goes nowhere; the id may be used again
    s.action_result(event.goal_no, 4, run_mission.Result())
    s.action_feedback(event.goal_no, run_mission.Feedback())
    assert sent(s) == [] and not s.goals and not s.goal_ids
    assert s.stats()['action_goals'] == 1 and s.stats()['goals_in_flight'] == 0
    _goal(s)


def test_send_action_goal_types_args_and_feedback_flag():
    s = session()
    quiet = _goal(s, 'q', action_type='fleet_interfaces/RunMission', args=[])  # pkg/Type and [] accepted
    assert quiet.feedback is False and quiet.goal == action_class(RUN_MISSION).Goal()
    s.action_feedback(quiet.goal_no, action_class(RUN_MISSION).Feedback())
    assert sent(s) == []  # no feedback unless asked for
    anonymous = _goal(s, None)  # no id: it runs, it just cannot be cancelled
    s.action_result(anonymous.goal_no, 6, action_class(RUN_MISSION).Result(detail='x'))
    (result,) = sent(s)
    assert 'id' not in result and result['status'] == 6 and result['result'] is True  # aborted is still a result


def test_send_action_goal_errors_carry_the_request_id():
    s = session(max_action_goals=2)
    cases = [
        ({'action': '/elsewhere/mission', 'action_type': RUN_MISSION}, 'may not send action goal /elsewhere/mission'),
        ({'action': '/act/mission'}, 'missing required field "action_type"'),
        ({'action': '/act/mission', 'action_type': 'fleet_interfaces/msg/RunMission'}, 'names a msg type'),
        ({'action': '/act/mission', 'action_type': 'fleet_interfaces/Nope'}, 'has no type'),
        ({'action': '/act/mission', 'action_type': RUN_MISSION, 'feedback': 'yes'}, 'true or false'),
        ({'action': '/act/mission', 'action_type': RUN_MISSION, 'args': {'nope': 1}}, 'nope'),
        ({'action': '/act/mission', 'action_type': RUN_MISSION, 'args': {'point_xy': 'x'}}, 'point_xy'),
        ({'action': '/act/mission', 'action_type': RUN_MISSION, 'compression': 'png'}, 'not supported'),
        ({'action': 'bad name', 'action_type': RUN_MISSION}, 'not a valid ROS name'),
    ]
    for i, (fields, expected) in enumerate(cases):
        assert send(s, op='send_action_goal', id=f'e{i}', **fields) == []
        (error,) = sent(s)
        assert error['level'] == 'error' and error['id'] == f'e{i}' and expected in error['msg'], (expected, error)
    viewer = session(Role.VIEWER)
    assert send(viewer, op='send_action_goal', id='v', action='/act/mission', action_type=RUN_MISSION) == []
    assert 'may not send action goal' in sent(viewer)[0]['msg']  # no grant: denied
    _goal(s, 'a')
    assert send(s, op='send_action_goal', id='a', action='/act/mission', action_type=RUN_MISSION) == []
    assert 'still in flight' in sent(s)[0]['msg']
    _goal(s, 'b')
    assert send(s, op='send_action_goal', id='c', action='/act/mission', action_type=RUN_MISSION) == []
    (error,) = sent(s)
    assert error['id'] == 'c' and 'at most 2 action goals' in error['msg']
    assert len(s.goals) == 2


def test_failed_goal_gets_a_status_error_and_a_false_result():
    s = session()
    event = _goal(s)
    s.action_result(event.goal_no, 0, None, 'the action server of /act/mission rejected the goal')
    error, result = sent(s)
    assert error['op'] == 'status' and error['level'] == 'error' and error['id'] == 'g1'
    assert 'rejected the goal' in error['msg']
    assert result == {
        'op': 'action_result',
        'action': '/act/mission',
        'id': 'g1',
        'values': 'the action server of /act/mission rejected the goal',
        'status': 0,
        'result': False,
    }
    assert s.stats()['action_goals_failed'] == 1


def test_cancel_action_goal_known_unknown_and_repeated():
    s = session()
    event = _goal(s)
    assert send(s, op='cancel_action_goal', action='/act/mission') == []
    assert 'needs the "id"' in sent(s)[0]['msg']
    assert send(s, op='cancel_action_goal', id='nope', action='/act/mission') == []
    (unknown,) = sent(s)
    assert unknown['id'] == 'nope' and 'no goal with id' in unknown['msg']
    assert send(s, op='cancel_action_goal', id='g1', action='/act/other') == []
    assert 'was sent to /act/mission' in sent(s)[0]['msg']
    assert send(s, op='cancel_action_goal', id='g1', action='/act/mission') == [
        CancelActionGoal(event.goal_no, '/act/mission')
    ]
    assert send(s, op='cancel_action_goal', id='g1', action='act/mission') == []  # asked already
    assert sent(s) == []
    s.action_result(event.goal_no, 5, action_class(RUN_MISSION).Result(detail='cancelled'))
    assert sent(s)[0]['status'] == 5
    assert send(s, op='cancel_action_goal', id='g1', action='/act/mission') == []  # finished: unknown now
    assert 'no goal with id' in sent(s)[0]['msg']


def test_goal_messages_honour_fragment_size_and_cbor():
    import cbor2

    s = session()
    long_detail = 'd' * 200
    fragmented = _goal(s, 'f', fragment_size=64)
    s.action_result(fragmented.goal_no, 4, action_class(RUN_MISSION).Result(detail=long_detail))
    pieces = sent(s)
    assert len(pieces) > 1 and all(p['op'] == 'fragment' for p in pieces)
    whole = json.loads(''.join(p['data'] for p in pieces))
    assert whole['op'] == 'action_result' and whole['id'] == 'f' and whole['values']['detail'] == long_detail
    binary = _goal(s, 'c', compression='cbor', feedback=True)
    s.action_feedback(binary.goal_no, action_class(RUN_MISSION).Feedback(points_done=3))
    s.action_result(binary.goal_no, 4, action_class(RUN_MISSION).Result())
    frames = s.outbox.pop_batch(10**9)
    decoded = [cbor2.loads(f.data) for f in frames]
    assert [m['op'] for m in decoded] == ['action_feedback', 'action_result']
    assert decoded[0]['values']['points_done'] == 3 and frames[0].critical and frames[1].critical  # in order


def test_finish_cancels_goals_in_flight():
    s = session()
    first = _goal(s, 'one')
    second = _goal(s, 'two')
    send(s, op='cancel_action_goal', id='one', action='/act/mission')
    events = s.finish()
    assert set(events) == {
        CancelActionGoal(first.goal_no, '/act/mission'),
        CancelActionGoal(second.goal_no, '/act/mission'),
    }
    assert not s.goals and not s.goal_ids
    s.action_result(first.goal_no, 5, action_class(RUN_MISSION).Result())
    assert len(s.outbox) == 0


# --- actions served by clients (advertise_action / send_action_goal to the client / action_result) ----------


def _serve_action(s: ClientSession, action: str = '/served/mission', rid: str = 'adv') -> AdvertiseAction:
    (event,) = send(s, op='advertise_action', id=rid, action=action, type=RUN_MISSION)
    assert event == AdvertiseAction(action, action_class(RUN_MISSION), rid)
    return event


def _forwarded(s: ClientSession, token: int, action: str = '/served/mission', **goal: object) -> dict:
    run_mission = action_class(RUN_MISSION)
    assert s.goal_request(action, token, run_mission.Goal(**goal)) == []
    (message,) = sent(s)
    return message


def test_advertise_action_forwards_ros_goals_and_relays_feedback_and_result():
    s = session()
    _serve_action(s)
    run_mission = action_class(RUN_MISSION)
    first = _forwarded(s, 7, workflow='inspection', point_ids=['p1'])
    second = _forwarded(s, 8)
    assert first['op'] == 'send_action_goal' and first['action'] == '/served/mission'
    assert first['action_type'] == RUN_MISSION and first['feedback'] is True
    assert first['args']['workflow'] == 'inspection' and first['args']['point_ids'] == ['p1']
    assert first['id'] != second['id']  # a fresh id per goal
    (feedback,) = send(s, op='action_feedback', id=first['id'], action='/served/mission', values={'points_done': 1})
    assert feedback == ServedGoalFeedback('/served/mission', 7, run_mission.Feedback(points_done=1))
    (result,) = send(
        s, op='action_result', id=first['id'], action='/served/mission', values={'success': True}, status=4, result=True
    )
    assert result == ServedGoalResult('/served/mission', 7, 4, run_mission.Result(success=True))
    # roslibjs' setFailed: no values, status ABORTED, result false
    (failed,) = send(s, op='action_result', id=second['id'], action='/served/mission', status=6, result=False)
    assert failed.token == 8 and failed.status == 6 and failed.result is None
    (canceled,) = send(s, op='action_result', id=_forwarded(s, 9)['id'], values={}, status=5, result=True)
    assert canceled.token == 9 and canceled.status == 5 and canceled.result == run_mission.Result()
    assert s.stats()['served_goals'] == 2 and s.stats()['served_goals_failed'] == 1 and not s.incoming_goals
    assert sent(s) == []


def test_goals_to_a_served_action_carry_the_type_as_the_client_advertised_it():
    s = session()
    send(s, op='advertise_action', id='adv', action='/served/short', type='fleet_interfaces/RunMission')
    assert s.goal_request('/served/short', 1, action_class(RUN_MISSION).Goal()) == []
    assert sent(s)[0]['action_type'] == 'fleet_interfaces/RunMission'  # not rewritten to pkg/action/Type


def test_ros_cancel_request_reaches_the_serving_client():
    s = session()
    _serve_action(s)
    goal = _forwarded(s, 3)
    s.goal_cancel_request('/served/mission', 3)
    assert sent(s) == [{'op': 'cancel_action_goal', 'id': goal['id'], 'action': '/served/mission'}]
    s.goal_cancel_request('/served/mission', 99)  # not forwarded (ended already): nothing to tell
    assert sent(s) == []


def test_action_feedback_and_result_unknown_mismatched_and_badly_typed():
    s = session()
    _serve_action(s)
    goal = _forwarded(s, 1)
    for op in ('action_feedback', 'action_result'):
        assert send(s, op=op, action='/served/mission', values={}) == []
        assert 'needs the "id"' in sent(s)[0]['msg']
        assert send(s, op=op, id='send_action_goal:/nope:1', values={}) == []
        (error,) = sent(s)
        assert error['id'] == 'send_action_goal:/nope:1' and 'no goal with id' in error['msg']
        assert send(s, op=op, id=goal['id'], action='/served/other', values={}) == []
        assert 'is for /served/mission' in sent(s)[0]['msg']
    assert send(s, op='action_feedback', id=goal['id'], values={'points_done': 'many'}) == []
    assert sent(s)[0]['id'] == goal['id']
    assert send(s, op='action_result', id=goal['id'], values={}, result='yes') == []
    assert 'true or false' in sent(s)[0]['msg']
    assert send(s, op='action_result', id=goal['id'], values={}, status='done') == []
    assert 'integer GoalStatus' in sent(s)[0]['msg']
    # values that do not fit the Result: the client is told, the ROS goal is aborted at once
    (aborted,) = send(s, op='action_result', id=goal['id'], values={'success': 'very'}, status=4)
    assert aborted.token == 1 and aborted.status == 6 and aborted.result is None
    (error,) = sent(s)
    assert error['id'] == goal['id'] and 'aborted' in error['msg']
    # the goal is finished: its id is unknown now
    assert send(s, op='action_result', id=goal['id'], values={}, status=4) == []
    assert 'no goal with id' in sent(s)[0]['msg']
    assert send(s, op='action_feedback', id=goal['id'], values={}) == []
    assert 'no goal with id' in sent(s)[0]['msg']


def test_advertise_action_acl_types_duplicates_limits_and_unadvertise():
    s = session(max_served_actions=2)
    send(s, op='advertise_action', id='x', action='/elsewhere/mission', type=RUN_MISSION)
    (error,) = sent(s)
    assert error['id'] == 'x' and 'may not advertise action /elsewhere/mission' in error['msg']
    send(s, op='advertise_action', id='x', action='/served/mission', type='std_srvs/SetBool')
    assert sent(s)[0]['level'] == 'error'
    send(s, op='advertise_action', id='x', action='/served/mission')
    assert 'missing required field "type"' in sent(s)[0]['msg']
    viewer = session(Role.VIEWER)
    send(viewer, op='advertise_action', id='v', action='/served/mission', type=RUN_MISSION)
    assert 'may not' in sent(viewer)[0]['msg']
    _serve_action(s)
    assert send(s, op='advertise_action', id='again', action='/served/mission', type=RUN_MISSION) == []
    _serve_action(s, '/served/second')
    send(s, op='advertise_action', id='third', action='/served/third', type=RUN_MISSION)
    (error,) = sent(s)
    assert error['id'] == 'third' and 'at most 2 advertised actions' in error['msg']
    goal = _forwarded(s, 3)
    assert send(s, op='unadvertise_action', id='u', action='/served/mission') == [UnadvertiseAction('/served/mission')]
    assert not s.incoming_goals  # the ROS side aborts the goals in flight when it destroys the server
    send(s, op='action_result', id=goal['id'], values={}, status=4)
    assert 'no goal with id' in sent(s)[0]['msg']
    send(s, op='unadvertise_action', id='u2', action='/served/mission')
    (error,) = sent(s)
    assert error['id'] == 'u2' and 'not advertised by this client' in error['msg']
    (aborted,) = s.goal_request('/served/mission', 4, action_class(RUN_MISSION).Goal())
    assert aborted.token == 4 and aborted.status == 6 and 'gone' in aborted.error


def test_served_goals_time_out_and_are_bounded():
    s = session(served_goal_timeout_s=600.0, max_served_goals=2)
    _serve_action(s)
    first = _forwarded(s, 1)
    s.clock.now += 1.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    second = _forwarded(s, 2)
    (busy,) = s.goal_request('/served/mission', 3, action_class(RUN_MISSION).Goal())
    assert busy.token == 3 and busy.status == 6 and 'in flight' in busy.error
    assert s.next_wake() == pytest.approx(700.0)
    s.clock.now = 700.0  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    (timed_out,) = s.poll(s.clock())
    assert timed_out == ServedGoalResult('/served/mission', 1, 6, None, 'no action_result within 600 s')
    assert sent(s)[0]['id'] == first['id']  # the client is told its result would come too late
    assert s.next_wake() == pytest.approx(701.0)
    (result,) = send(s, op='action_result', id=second['id'], values={'points_done': 2}, status=4, result=True)
    assert result.token == 2 and result.result.points_done == 2
    assert s.next_wake() is None and s.stats()['served_goals_failed'] == 2


def test_finish_unadvertises_served_actions():
    s = session()
    _serve_action(s)
    _serve_action(s, '/served/second')
    _forwarded(s, 1)
    events = s.finish()
    assert set(events) == {UnadvertiseAction('/served/mission'), UnadvertiseAction('/served/second')}
    assert not s.incoming_goals and not s.served_actions
    (aborted,) = s.goal_request('/served/mission', 2, action_class(RUN_MISSION).Goal())
    assert aborted.status == 6


# --- config -----------------------------------------------------------------------------------------------


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / 'gw.yaml'
    path.write_text('fleet_gateway: {limits: {send_queue_frames: "many"}}')
    with pytest.raises(ConfigError, match=r'gw\.yaml: fleet_gateway\.limits\.send_queue_frames'):
        load_gateway_config(path)
    for text, key in (
        ('{tls: {cert: a.pem}}', 'tls'),
        ('{ingest_budget_s: 0}', 'ingest_budget_s'),
        ('{receive_buffer_bytes: 10}', 'receive_buffer_bytes'),
        ('{ingest_shed_budget_s: -0.1}', 'ingest_shed_budget_s'),
        ('{metrics_port: "9100"}', 'metrics_port'),
    ):
        path.write_text(f'fleet_gateway: {text}')
        with pytest.raises(ConfigError, match=rf'fleet_gateway\.{key}'):
            load_gateway_config(path)
    path.write_text(
        'fleet_gateway: {ingest_budget_s: 0.02, ingest_shed_budget_s: 0, receive_buffer_bytes: 65536, metrics_port: 0}'
    )
    config = load_gateway_config(path)
    assert config.ingest_budget_s == 0.02 and config.receive_buffer_bytes == 65536
    assert config.ingest_shed_budget_s == 0.0 and config.metrics_port == 0
    path.write_text("fleet_gateway: {max_staleness_ms: 250, staleness: [{glob: '/*/*/odom', max_ms: 100}]}")
    config = load_gateway_config(path)
    assert config.max_staleness_ms == 250 and config.staleness[0].max_ms == 100
    path.write_text("fleet_gateway: {staleness: [{glob: '/x', max_ms: -1}]}")
    with pytest.raises(ConfigError, match=r'staleness\[0\]'):
        load_gateway_config(path)
    acl = tmp_path / 'acl.yaml'
    acl.write_text('roles: {admin: {}}')
    with pytest.raises(ConfigError, match=r'acl\.yaml: roles\.admin'):
        load_acl(acl)
    with pytest.raises(ConfigError, match='FLEET_GATEWAY_TOKENS'):
        load_tokens(None, {'FLEET_GATEWAY_TOKENS': 'short:operator:x'})
    store = load_tokens(None, {'FLEET_GATEWAY_TOKENS': 'abcdefghijklmnopq:viewer:v'})
    assert store.authenticate('abcdefghijklmnopq') == Principal('v', Role.VIEWER)


def test_repo_example_config_loads():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    config = load_gateway_config(root / 'config' / 'gateway.yaml')
    acl = load_acl(config.acl_file)
    assert not acl.allows(Role.OPERATOR, Action.PUBLISH, '/site_a/robot_1/command')
    assert acl.allows(Role.OPERATOR, Action.PUBLISH, '/fleet/site_a/zone_1/estop')
    for role in Role:  # serving actions through the gateway is granted to no role
        assert not acl.allows(role, Action.ADVERTISE_ACTION, '/fleet/site_a/zone_1/mission')
    assert not acl.allows(Role.SITE_LINK, Action.PUBLISH, '/fleet/site_a/zone_1/estop')
    for control in ('ack', 'outcome', 'journal', 'heartbeat', 'status', 'leader', 'mission_journal'):
        assert not acl.allows(Role.SITE_LINK, Action.PUBLISH, f'/fleet/site_a/zone_1/{control}'), control
    assert not acl.allows(Role.SITE_LINK, Action.PUBLISH, '/site_a/robot_1/command')
    assert acl.allows(Role.SITE_LINK, Action.PUBLISH, '/fleet/site_a/zone_1/task_events')
    assert acl.allows(Role.SITE_LINK, Action.PUBLISH, '/site_a/robot_1/odom')
    assert acl.allows(Role.SITE_LINK, Action.SUBSCRIBE, '/fleet/site_a/zone_1/estop')
    assert not acl.allows(Role.SITE_LINK, Action.SUBSCRIBE, '/fleet/site_a/zone_1/ack')
    assert not acl.allows(Role.SITE_LINK, Action.CALL_SERVICE, '/fleet/site_a/zone_1/submit')
    assert acl.allows(Role.OPERATOR, Action.SEND_ACTION_GOAL, '/fleet/site_a/zone_1/mission')
    assert not acl.allows(Role.OPERATOR, Action.SEND_ACTION_GOAL, '/site_a/robot_1/mission')
    assert not acl.allows(Role.VIEWER, Action.SEND_ACTION_GOAL, '/fleet/site_a/zone_1/mission')
    assert not acl.allows(Role.SITE_LINK, Action.SEND_ACTION_GOAL, '/fleet/site_a/zone_1/mission')


def test_relay_role_never_covers_control_topics_whatever_its_grants(tmp_path):
    """A site link granted everything still cannot publish what shards and agents act on (a forged ack showed
    SUCCEEDED for running work; injected journal entries were executed), nor call or serve shard services and
    actions; an operator with the same grants can. Every name fleet_core.topics builds is classified."""
    import inspect

    from fleet_core import topics
    from fleet_gateway.acl import CONTROL_ACTIONS, CONTROL_SERVICES, CONTROL_TOPICS

    acl = tmp_path / 'acl.yaml'
    everything = "{publish: ['/**'], command_publish: ['/**'], subscribe: ['/**'], call_service: ['/**'], "
    everything += "advertise_service: ['/**'], send_action_goal: ['/**'], advertise_action: ['/**']}"
    acl.write_text(f'roles: {{site-link: {everything}, operator: {everything}}}')
    policy = load_acl(acl)
    observational = {'shard_task_events', 'shard_trace', 'agent_odom'}
    control = [GlobSet(CONTROL_TOPICS), GlobSet(CONTROL_SERVICES), GlobSet(CONTROL_ACTIONS)]
    verbs = [
        (Action.PUBLISH,),
        (Action.CALL_SERVICE, Action.ADVERTISE_SERVICE),
        (Action.SEND_ACTION_GOAL, Action.ADVERTISE_ACTION),
    ]
    checked = 0
    for fn_name, fn in inspect.getmembers(topics, inspect.isfunction):
        if not fn_name.startswith(('shard_', 'agent_')) or fn_name in ('shard_prefix', 'agent_namespace'):
            continue
        name = fn('site_a', 'zone_1')
        kinds = [i for i, globs in enumerate(control) if globs.matches(name)]
        assert bool(kinds) != (fn_name in observational), f'{fn_name} ({name}) is not classified as control or not'
        for kind in kinds:
            for verb in verbs[kind]:
                assert not policy.allows(Role.SITE_LINK, verb, name), (verb, name)
                assert policy.allows(Role.OPERATOR, verb, name), (verb, name)
        if not kinds:
            assert policy.allows(Role.SITE_LINK, Action.PUBLISH, name), name
        assert policy.allows(Role.SITE_LINK, Action.SUBSCRIBE, name)  # reading is not refused: downlinks
        checked += 1
    assert checked >= 15


def test_action_acl_and_limits_load_from_yaml(tmp_path):
    acl = tmp_path / 'acl.yaml'
    acl.write_text("roles: {operator: {send_action_goal: ['/fleet/*/*/mission']}, viewer: {}}")
    policy = load_acl(acl)
    assert policy.allows(Role.OPERATOR, Action.SEND_ACTION_GOAL, '/fleet/a/b/mission')
    assert not policy.allows(Role.OPERATOR, Action.SEND_ACTION_GOAL, '/fleet/a/b/other')
    assert not policy.allows(Role.VIEWER, Action.SEND_ACTION_GOAL, '/fleet/a/b/mission')
    acl.write_text("roles: {operator: {send_action_goal: 'fleet'}}")
    with pytest.raises(ConfigError, match=r'roles\.operator\.send_action_goal'):
        load_acl(acl)
    config = tmp_path / 'gw.yaml'
    config.write_text('fleet_gateway: {limits: {max_action_goals: 5, action_server_wait_s: 0.5}}')
    limits = load_gateway_config(config).limits
    assert limits.max_action_goals == 5 and limits.action_server_wait_s == 0.5
    assert SessionLimits().max_action_goals == 64
    acl.write_text("roles: {operator: {advertise_action: ['/robots/*/dock']}}")
    policy = load_acl(acl)
    assert policy.allows(Role.OPERATOR, Action.ADVERTISE_ACTION, '/robots/r1/dock')
    assert not policy.allows(Role.OPERATOR, Action.ADVERTISE_ACTION, '/robots/r1/undock')
    assert not policy.allows(Role.OPERATOR, Action.SEND_ACTION_GOAL, '/robots/r1/dock')
    config.write_text('fleet_gateway: {limits: {max_served_actions: 3, max_served_goals: 4, served_goal_timeout_s: 9}}')
    limits = load_gateway_config(config).limits
    assert (limits.max_served_actions, limits.max_served_goals, limits.served_goal_timeout_s) == (3, 4, 9)
    assert SessionLimits().served_goal_timeout_s == 600.0


def test_stale_telemetry_is_dropped_at_send_time_counted_and_reported():
    q = SendQueue(max_frames=100, max_bytes=10**6, critical_max_bytes=10**6)
    q.put(OutFrame('old', expires=10.0), '/pose')
    q.put(OutFrame('cmd', critical=True), '/cmd')
    q.put(OutFrame('new', expires=12.0), '/pose')
    q.put(OutFrame('reliable'), '/events')  # no bound: never stale
    assert [f.data for f in q.pop_batch(10**6, now=11.0)] == ['cmd', 'new', 'reliable']
    assert q.stale_total == 1 and q.dropped_total == 1 and q.drops == {'/pose': 1}
    # the in-flight allowance limits non-critical frames only; critical ones always go
    q.put(OutFrame('a' * 10), '/t')
    q.put(OutFrame('b' * 10), '/t')
    q.put(OutFrame('c', critical=True))
    assert [f.data for f in q.pop_batch(10**6, now=11.0, normal_bytes=0)] == ['c']
    assert [f.data for f in q.pop_batch(10**6, now=11.0, normal_bytes=5)] == ['a' * 10]
    s = session()
    send(s, op='subscribe', id='p', topic='/pose', type='std_msgs/String')
    published = PublishedMessage('/pose', {'data': 'x'}, critical=False, max_age_s=0.3)
    assert published.expires == pytest.approx(published.received_at + 0.3)
    assert PublishedMessage('/cmd', {}, critical=True, max_age_s=0.3).expires is None  # critical: never stale
    s.deliver(published, s.clock())
    assert s.outbox.pop_batch(10**6, now=published.received_at + 0.31) == []
    assert s.stats()['stale_dropped'] == 1 and s.next_wake() is not None  # a report is due
    s.poll(s.clock())
    (report,) = sent(s)
    assert report['level'] == 'warning' and '1 of them older than their staleness bound' in report['msg']


def test_client_behind_queues_only_what_it_can_read_within_the_staleness_bound():
    s = session()
    send(s, op='subscribe', id='p', topic='/pose', type='std_msgs/String')
    send(s, op='subscribe', id='e', topic='/events', type='std_msgs/String')
    s.backlog_keep, s.backlog_rate = 2, 10.0  # set by the transport while the client's in-flight window is full
    pose = [PublishedMessage('/pose', {'data': str(i)}, critical=False, max_age_s=0.5) for i in range(5)]
    events = [PublishedMessage('/events', {'data': str(i)}, critical=False) for i in range(5)]
    s.deliver_batch('/pose', pose, s.clock())
    s.deliver_batch('/events', events, s.clock())  # no staleness bound: not capped by the backlog allowance
    assert [(m['topic'], m['msg']['data']) for m in sent(s) if m['op'] == 'publish'] == [
        ('/pose', '3'),
        ('/pose', '4'),
        *[('/events', str(i)) for i in range(5)],
    ]
    s.note_stale('/pose', 7, s.clock())  # stale before the fan-out: counted as stale drops
    assert s.stats()['dropped'] == 10 and s.stats()['stale_dropped'] == 7
    # paced: 0.15 s later a client reading 10 frames/s takes the newest 1 + 1 of the next batch, not all 5
    s.clock.now += 0.15  # type: ignore[attr-defined]  # the fake clock is settable; the session sees a plain callable
    s.deliver_batch('/pose', pose, s.clock())
    assert [m['msg']['data'] for m in sent(s)] == ['3', '4'] and s.stats()['dropped'] == 13


def test_deliver_batch_matches_per_message_delivery():
    one = session(send_queue_frames=5)
    many = session(send_queue_frames=5)
    for s in (one, many):
        send(s, op='subscribe', id='a', topic='/t', type='std_msgs/String')
    batch = [PublishedMessage('/t', {'data': str(i)}, critical=False, max_age_s=math.inf) for i in range(12)]
    for published in batch:
        one.deliver(published, one.clock())
    many.deliver_batch('/t', batch, many.clock())
    published = [[m for m in sent(s) if m['op'] == 'publish'] for s in (one, many)]
    assert published[0] == published[1] and len(published[0]) == 5
    assert one.stats()['dropped'] == many.stats()['dropped'] == 7


def test_cbor_subscription_gets_binary_frames_encoded_once():
    import cbor2

    a, b = session(), session()
    for s in (a, b):
        send(s, op='subscribe', id='c', topic='/t', type='std_msgs/String', compression='cbor')
    published = PublishedMessage('/t', {'data': 'x'}, critical=False)
    a.deliver(published, 0.0)
    b.deliver(published, 0.0)
    (fa,) = a.outbox.pop_batch(10**6)
    (fb,) = b.outbox.pop_batch(10**6)
    assert fa is fb and isinstance(fa.data, bytes)
    assert cbor2.loads(fa.data) == {'op': 'publish', 'topic': '/t', 'msg': {'data': 'x'}}


def test_cbor_raw_subscription_gets_the_serialized_message():
    import cbor2
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import String

    s = session()
    events = send(s, op='subscribe', id='raw', topic='/t', type='std_msgs/String', compression='cbor-raw')
    assert events == [SubscribeTopic('/t', message_class('std_msgs/String'))] and events[0].request_id == 'raw'
    ros_msg = String(data='raw bytes')
    published = PublishedMessage('/t', {'data': 'raw bytes'}, critical=False, raw=lambda: serialize_message(ros_msg))
    s.deliver(published, 0.0)
    (frame,) = s.outbox.pop_batch(10**6)
    message = cbor2.loads(frame.data)
    assert message['op'] == 'publish' and message['topic'] == '/t'
    assert deserialize_message(message['msg']['bytes'], String) == ros_msg
    assert abs(message['msg']['secs'] + message['msg']['nsecs'] / 1e9 - time.time()) < 60
    send(s, op='send_action_goal', id='g', action='/act/m', action_type=RUN_MISSION, compression='cbor-raw')
    assert 'not supported' in sent(s)[0]['msg']  # only subscriptions carry serialized messages


def test_binary_frames_carry_cbor_protocol_messages():
    import cbor2

    s = session()
    events = s.receive_bytes(cbor2.dumps({'op': 'subscribe', 'id': 'b', 'topic': '/t', 'type': 'std_msgs/String'}))
    assert events == [SubscribeTopic('/t', message_class('std_msgs/String'))]
    s.receive_bytes(cbor2.dumps({'op': 'advertise', 'topic': '/u', 'type': 'std_msgs/UInt8MultiArray'}))
    (publish,) = s.receive_bytes(cbor2.dumps({'op': 'publish', 'topic': '/u', 'msg': {'data': b'\x01\x02'}}))
    assert list(publish.msg.data) == [1, 2]  # a CBOR byte string fills a uint8[] field
    s.receive_bytes(cbor2.dumps([1, 2]))
    s.receive_bytes(b'\xff\xff')
    errors = sent(s)
    assert [m['op'] for m in errors] == ['status', 'status'], errors
    assert 'CBOR map' in errors[0]['msg'] and 'binary frames' in errors[1]['msg']


# --- publish fast path: JSON straight to CDR for flat messages ---------------------------------------------

FLAT_TYPES = [
    'std_msgs/String',
    'std_msgs/Bool',
    'std_msgs/Int8',
    'std_msgs/UInt64',
    'std_msgs/Int64',
    'std_msgs/Float32',
    'std_msgs/Float64',
    'std_msgs/ColorRGBA',
    'std_msgs/MultiArrayDimension',
    'rcl_interfaces/SetParametersResult',
    'rcl_interfaces/IntegerRange',
    'rcl_interfaces/LoggerLevel',
    'builtin_interfaces/Time',
]


def test_flat_messages_go_straight_to_cdr_bytes_that_rclpy_reads_back_identically():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from rclpy.serialization import deserialize_message, serialize_message

    def ref(codec, value):
        try:
            return codec.from_json(value)
        except (ConversionError, AssertionError, OverflowError) as exc:
            return exc

    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**65), 2**65)
        | st.sampled_from([0, 1, -1, 127, 128, 255, 256, 2**31, 2**63, 2**64 - 1, 2**64])
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.sampled_from([3.4e38, 3.5e38, 1e-46, -0.0])
        | st.text(max_size=8)
        | st.sampled_from(['a\x00b', '\ud800', 'é€😀'])
    )
    stats = {'fast': 0, 'fallback': 0}

    def typed(slot):
        name = getattr(slot, 'typename', 'string')
        if name == 'boolean':
            return st.booleans()
        if name in ('float', 'double'):
            return st.floats(allow_nan=False, allow_infinity=False, width=32 if name == 'float' else 64)
        if name == 'string':
            return st.text(max_size=12)
        low, high = {'int8': (-128, 127), 'uint8': (0, 255), 'int32': (-(2**31), 2**31 - 1)}.get(
            name, (-(2**63), 2**64)
        )
        return st.integers(low, high)

    @settings(max_examples=400, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(FLAT_TYPES), st.data())
    def check(type_name: str, data) -> None:
        cls = message_class(type_name)
        codec = codec_for(cls)
        value = {}
        for name, slot in [*zip(cls.get_fields_and_field_types(), cls.SLOT_TYPES, strict=True), ('nope', None)]:
            pick = data.draw(st.integers(0, 9))
            if pick < 2 or (name == 'nope' and pick < 9):
                continue  # missing: keeps its default
            value[name] = data.draw(scalars if pick < 5 or slot is None else typed(slot))
        expected = ref(codec, value)
        try:
            out = codec.to_publish(value)
        except (ConversionError, AssertionError, OverflowError) as exc:
            assert isinstance(expected, Exception) and str(exc) == str(expected)  # noqa: PT017 - raising is one of the two allowed outcomes
            return
        assert not isinstance(expected, Exception), (value, expected)
        if isinstance(out, bytes):
            stats['fast'] += 1
            # the message rclpy's conversion publishes (bytes may differ in padding: Fast CDR leaves it unset)
            published = deserialize_message(serialize_message(expected), cls)
            assert deserialize_message(out, cls) == published, (type_name, value)
            assert len(out) <= len(serialize_message(expected)) <= len(out) + 3
        else:
            stats['fallback'] += 1
            assert repr(out) == repr(expected)  # repr: NaN (from null) is not equal to itself

    check()
    assert stats['fast'] > 100 and stats['fallback'] > 10, stats
    status = message_class('fleet_interfaces/ShardStatus')
    assert type(codec_for(status).to_publish({})) is status  # nested, not flat: the generic path's message instance
    empty = codec_for(message_class('std_msgs/Empty')).to_publish({})
    assert not isinstance(empty, bytes)  # not flat in the CDR sense (hidden placeholder byte): rclpy converts it

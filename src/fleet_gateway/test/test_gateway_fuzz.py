"""Fuzz test of the sans-I/O gateway core: at least 100,000 generated inputs (protocol-shaped JSON, arbitrary
text, binary garbage, ROS deliveries, service answers, ROS calls to client-served services, and feedback and
results of action goals, ROS goals and cancels to client-served actions) against client sessions. Asserts that
nothing raises, queues stay bounded, every status id is one the client sent or was sent, every forwarded ROS call is
answered and every forwarded ROS goal ended exactly once, goals in flight stay within their limits, and finish()
releases every ROS endpoint and cancels every goal still in flight."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet_gateway.acl import PROTECTED_TOPICS, AccessPolicy, GlobSet, Principal, Role, RolePolicy
from fleet_gateway.protocol import (
    AdvertiseAction,
    AdvertiseService,
    AdvertiseTopic,
    CallService,
    CancelActionGoal,
    ClientSession,
    PublishedMessage,
    SendActionGoal,
    SendQueue,
    ServedGoalFeedback,
    ServedGoalResult,
    ServiceReply,
    SessionLimits,
    SubscribeTopic,
    UnadvertiseAction,
    UnadvertiseService,
    UnadvertiseTopic,
    UnsubscribeTopic,
)
from fleet_gateway.protocol.fields import request_id
from harness.gateway_inputs import NAMES, OPS, TYPES, random_input

TARGET_INPUTS = 100_000

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
msg_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            'data': values,
            'stamp': st.fixed_dictionaries({}, optional={'sec': values, 'nanosec': values, 'secs': values}),
            'queue_depth': st.lists(st.integers(-1, 2**33), max_size=5),
            'lost_agent_ids': values,
            'engaged': values,
            'revision': values,
        },
    )
    | values
)
messages = st.fixed_dictionaries(
    {'op': st.sampled_from(OPS) | st.text(max_size=8)},
    optional={
        'id': st.sampled_from(['a', 'b', 1, 2]) | values,
        'topic': st.sampled_from(NAMES) | st.text(max_size=10),
        'service': st.sampled_from(NAMES),
        'type': st.sampled_from(TYPES) | values,
        'msg': msg_bodies,
        'args': msg_bodies,
        'throttle_rate': values,
        'queue_length': values,
        'fragment_size': values,
        'compression': st.sampled_from(['none', 'cbor', 'png']) | values,
        'timeout': values,
        'level': st.sampled_from(['info', 'warning', 'error', 'none']) | values,
        'data': st.text(max_size=30),
        'num': st.integers(-1, 4) | values,
        'total': st.integers(-1, 4),
        'token': st.sampled_from(['good-token-0123456789', 'bad']) | values,
        'latch': values,
        'action': st.sampled_from(NAMES),
        'action_type': st.sampled_from(TYPES) | values,
        'feedback': st.booleans() | values,
    },
)
inputs = st.one_of(
    messages.map(lambda m: ('text', json.dumps(m))),
    messages.map(lambda m: ('text', json.dumps(m)[: max(1, len(json.dumps(m)) // 2)])),
    st.text(max_size=40).map(lambda t: ('text', t)),
    st.binary(max_size=40).map(lambda b: ('bytes', b)),
    st.tuples(st.sampled_from(NAMES[:5]), msg_bodies, st.booleans()).map(lambda d: ('deliver', d)),
    st.integers(0, 5).map(lambda n: ('answer', n)),
    st.floats(0, 30).map(lambda dt: ('tick', dt)),
    st.integers(0, 5).map(lambda n: ('request', n)),
    st.tuples(st.integers(0, 5), msg_bodies, values).map(lambda r: ('respond', r)),
    st.tuples(st.integers(0, 5), st.integers(0, 6), st.booleans()).map(lambda g: ('goal_result', g)),
    st.integers(0, 5).map(lambda n: ('goal_feedback', n)),
    st.integers(0, 5).map(lambda n: ('goal_request', n)),
    st.integers(0, 5).map(lambda n: ('goal_cancel', n)),
    st.tuples(st.integers(0, 5), msg_bodies, values, values).map(lambda r: ('serve', r)),
)


def _policy() -> AccessPolicy:
    everything = GlobSet(['/**'])
    operator = RolePolicy(
        Role.OPERATOR,
        everything,
        everything,
        everything,
        everything,
        GlobSet([]),
        send_action_goal=everything,
        advertise_action=everything,
    )
    return AccessPolicy({Role.OPERATOR: operator}, GlobSet(PROTECTED_TOPICS), GlobSet(PROTECTED_TOPICS))


POLICY = _policy()
LIMITS = SessionLimits(
    send_queue_frames=20,
    send_queue_bytes=4_000,
    critical_queue_bytes=8_000,
    max_subscriptions=4,
    max_publishers=4,
    max_pending_calls=3,
    max_fragmented_messages=2,
    max_message_bytes=2_000,
    max_served_services=3,
    max_served_calls=4,
    served_call_timeout_s=5.0,
    max_action_goals=3,
    max_served_actions=3,
    max_served_goals=4,
    served_goal_timeout_s=5.0,
)
TOKENS = {'good-token-0123456789': Principal('late', Role.OPERATOR)}


def _held(q: SendQueue) -> tuple[int, int, int]:
    """What the queue really holds, read from its frames, not from the counters it keeps: droppable frames, bytes
    of droppable and lossless frames, bytes of critical frames. Also checks that its own counts agree."""
    live = [entry for entry in q._normal if entry.alive]
    held = (sum(1 for e in live if e.droppable), sum(e.frame.size for e in live), sum(f.size for f in q._critical))
    assert (len(q), q.bytes) == (len(live) + len(q._critical), held[1] + held[2]), (len(q), q.bytes, held)
    return held


def _json_safe(value):
    """What the ROS side hands over: conversion maps non-finite floats to null (tested in test_gateway_protocol)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _ids_in(raw: str) -> set:
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return set()
    return {json.dumps(request_id(message), sort_keys=True)} if isinstance(message, dict) else set()


def _drive(authenticated: bool, feed: list, count: Counter) -> None:
    """Feed one session; check bounds after every input and that finish() releases every ROS endpoint."""
    now = [0.0]
    session = ClientSession(
        'fuzz',
        policy=POLICY,
        principal=Principal('f', Role.OPERATOR) if authenticated else None,
        limits=LIMITS,
        authenticate=TOKENS.get,
        clock=lambda: now[0],
    )
    live_subs: Counter = Counter()
    live_pubs: Counter = Counter()
    calls: list[CallService] = []
    live_served: Counter = Counter()
    forwarded: dict[int, str] = {}  # token -> service, until answered (or its service is unadvertised)
    tokens = iter(range(1, 10**9))
    goals: dict[int, SendActionGoal] = {}  # sent by the client, no result reported yet
    live_actions: Counter = Counter()
    served_goals: dict[int, str] = {}  # token -> action, until ended (or its action is unadvertised)
    sent_ids: set = set()
    for kind, item in feed:
        count['inputs'] += 1
        events = []
        if kind == 'text':
            sent_ids |= _ids_in(item)
            if '"fragment"' in item:
                sent_ids.add('*')  # reassembled inner messages carry ids of their own
            events = session.receive_text(item)
        elif kind == 'bytes':
            events = session.receive_bytes(item)
        elif kind == 'deliver':
            topic, body, critical = item
            payload = _json_safe(body if isinstance(body, dict) else {'v': body})
            session.deliver(PublishedMessage(topic, payload, critical=critical), now[0])
        elif kind == 'batch':
            topic, body, critical, n = item
            batch = [PublishedMessage(topic, _json_safe({'i': i, 'v': body}), critical=critical) for i in range(n)]
            session.deliver_batch(topic, batch, now[0])
        elif kind == 'answer' and calls:
            call = calls.pop(item % len(calls))
            session.service_result(call.call_no, None, 'fuzz says no')
        elif kind == 'tick':
            now[0] += item
            events = session.poll(now[0])
        elif kind == 'request' and session.served:
            service = sorted(session.served)[item % len(session.served)]
            token = next(tokens)
            forwarded[token] = service
            events = session.service_request(service, token, session.served[service].cls.Request())
        elif kind == 'goal_result' and goals:
            n, status, failed = item
            goal = goals.pop(sorted(goals)[n % len(goals)])
            result = None if failed else goal.action_cls.Result()  # type: ignore[attr-defined]  # rosidl action classes gain Goal/Result/Feedback at import
            session.action_result(goal.goal_no, status, result, 'fuzz failure' if failed else None)
        elif kind == 'goal_feedback' and goals:
            goal = goals[sorted(goals)[item % len(goals)]]
            session.action_feedback(goal.goal_no, goal.action_cls.Feedback())  # type: ignore[attr-defined]  # rosidl action classes gain Goal/Result/Feedback at import
        elif kind == 'goal_request' and session.served_actions:
            action = sorted(session.served_actions)[item % len(session.served_actions)]
            token = next(tokens)
            served_goals[token] = action
            goal = session.served_actions[action].cls.Goal()  # type: ignore[attr-defined]  # rosidl action classes gain Goal/Result/Feedback at import
            events = session.goal_request(action, token, goal)
            count['served_goals'] += not events  # forwarded to the client, not aborted at once
        elif kind == 'goal_cancel' and session.incoming_goals:
            incoming = list(session.incoming_goals.values())[item % len(session.incoming_goals)]
            session.goal_cancel_request(incoming.name, incoming.token)
        elif kind == 'serve' and session.incoming_goals:
            n, body, status, result = item
            goal_id = list(session.incoming_goals)[n % len(session.incoming_goals)]
            op = 'action_feedback' if n % 3 == 0 else 'action_result'
            answer = {'op': op, 'id': goal_id, 'values': body, 'status': status, 'result': result}
            events = session.receive_text(json.dumps(answer))
        elif kind == 'respond' and session.incoming_calls:
            n, body, result = item
            call_id = list(session.incoming_calls)[n % len(session.incoming_calls)]
            response = {'op': 'service_response', 'id': call_id, 'values': body, 'result': result}
            events = session.receive_text(json.dumps(response))
        for event in events:
            if isinstance(event, SubscribeTopic):
                live_subs[event.topic] += 1
            elif isinstance(event, UnsubscribeTopic):
                live_subs[event.topic] -= 1
            elif isinstance(event, AdvertiseTopic):
                live_pubs[event.topic] += 1
            elif isinstance(event, UnadvertiseTopic):
                live_pubs[event.topic] -= 1
            elif isinstance(event, CallService):
                calls.append(event)
            elif isinstance(event, AdvertiseService):
                live_served[event.service] += 1
            elif isinstance(event, UnadvertiseService):
                live_served[event.service] -= 1
                for token in [t for t, svc in forwarded.items() if svc == event.service]:
                    del forwarded[token]  # the ROS side answers these when it destroys the service
            elif isinstance(event, ServiceReply):
                assert forwarded.pop(event.token) == event.service  # answered exactly once
            elif isinstance(event, SendActionGoal):
                assert event.goal_no not in goals
                goals[event.goal_no] = event
                count['goals'] += 1
            elif isinstance(event, CancelActionGoal):
                assert goals[event.goal_no].action == event.action  # only goals in flight are cancelled
            elif isinstance(event, AdvertiseAction):
                live_actions[event.action] += 1
            elif isinstance(event, UnadvertiseAction):
                live_actions[event.action] -= 1
                for token in [t for t, name in served_goals.items() if name == event.action]:
                    del served_goals[token]  # the ROS side aborts these when it destroys the server
            elif isinstance(event, ServedGoalFeedback):
                assert served_goals[event.token] == event.action  # only for goals in flight
            elif isinstance(event, ServedGoalResult):
                assert served_goals.pop(event.token) == event.action  # ended exactly once
        assert len(goals) == len(session.goals) <= LIMITS.max_action_goals
        assert all(v in (0, 1) for v in live_served.values()), live_served
        assert all(v in (0, 1) for v in live_actions.values()), live_actions
        assert len(session.incoming_goals) <= LIMITS.max_served_goals
        assert len(session.served_actions) <= LIMITS.max_served_actions
        assert len(session.incoming_calls) <= LIMITS.max_served_calls
        # the send queue's real contents: each lane within its budget (plus one frame that alone exceeds it)
        frames, normal_bytes, critical_bytes = _held(session.outbox)
        assert frames <= LIMITS.send_queue_frames, session.stats()
        assert normal_bytes <= LIMITS.send_queue_bytes + 4_000, session.stats()
        assert critical_bytes <= LIMITS.critical_queue_bytes + 4_000, session.stats()
        assert len(session.subscriptions) <= LIMITS.max_subscriptions
        assert len(session.pending_calls) <= LIMITS.max_pending_calls
        for frame in session.outbox.pop_batch(10**9) if count['inputs'] % 3 == 0 else []:
            if isinstance(frame.data, str):
                reply = json.loads(frame.data)
                if reply['op'] in ('call_service', 'send_action_goal'):
                    sent_ids.add(json.dumps(reply['id'], sort_keys=True))
                if reply['op'] == 'status' and 'id' in reply and '*' not in sent_ids:
                    assert json.dumps(reply['id'], sort_keys=True) in sent_ids, reply
    for event in session.finish():
        if isinstance(event, CancelActionGoal):
            assert goals.pop(event.goal_no).action == event.action
        elif isinstance(event, UnsubscribeTopic):
            live_subs[event.topic] -= 1
        elif isinstance(event, UnadvertiseTopic):
            live_pubs[event.topic] -= 1
        elif isinstance(event, UnadvertiseService):
            live_served[event.service] -= 1
            for token in [t for t, svc in forwarded.items() if svc == event.service]:
                del forwarded[token]
        elif isinstance(event, UnadvertiseAction):
            live_actions[event.action] -= 1
            for token in [t for t, name in served_goals.items() if name == event.action]:
                del served_goals[token]
    assert all(v == 0 for v in live_subs.values()), live_subs
    assert all(v == 0 for v in live_pubs.values()), live_pubs
    assert all(v == 0 for v in live_served.values()), live_served
    assert not forwarded, forwarded  # every ROS call was answered or failed with its service
    assert all(v == 0 for v in live_actions.values()), live_actions
    assert not served_goals, served_goals  # every ROS goal ended, or was aborted with its action server
    assert not goals and not session.goals, goals  # every goal in flight was cancelled
    assert len(session.outbox) == 0 and not session.pending_calls
    count['sessions'] += 1


def test_fuzz_structured_inputs_with_shrinking():
    """Hypothesis-built protocol messages (slow to generate, good at shrinking a failure to a small case)."""
    count: Counter = Counter()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.booleans(), st.lists(inputs, min_size=1, max_size=30))
    def run(authenticated: bool, feed: list) -> None:
        _drive(authenticated, feed, count)

    run()
    assert count['sessions'] >= 300


def test_fuzz_100k_generated_inputs_never_crash_or_leak():
    """Hypothesis picks seeds and session shapes; a grammar-aware generator expands each seed into 250 inputs
    (fast), so the session core sees well over 100,000 inputs in a few seconds."""
    count: Counter = Counter()

    @settings(max_examples=420, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.booleans(), st.integers(0, 2**64))
    def run(authenticated: bool, seed: int) -> None:
        rng = random.Random(seed)
        _drive(authenticated, [random_input(rng) for _ in range(250)], count)

    run()
    assert count['inputs'] >= TARGET_INPUTS, count
    assert count['goals'] >= 200, count  # action goals got into flight, not only refused
    assert count['served_goals'] >= 100, count  # ROS goals reached client-served actions


def test_send_queue_bytes_and_frames_stay_within_bounds_under_random_load():
    """Random telemetry, reliable and critical frames (sizes, keys, per-key depths) with rare pops: the queue's real
    contents never exceed its frame and byte budgets (one oversize frame aside), frames that are never dropped
    (critical, reliable) by raising instead, and every reliable frame it accepted comes out, in order."""
    import math
    import random

    from fleet_gateway.protocol import OutFrame, SendQueueOverflow

    rng = random.Random(7)
    q = SendQueue(max_frames=50, max_bytes=5_000, critical_max_bytes=8_000)
    overflows = 0
    accepted: list[str] = []
    popped: list[str] = []
    for i in range(20_000):
        size = rng.choice([1, 10, 100, 1_000, 3_000])
        kind = rng.random()
        try:
            if kind < 0.1:
                q.put(OutFrame('c' * size, critical=True))
            elif kind < 0.2:
                tag = f'r{i:05d}'
                q.put(OutFrame(tag + 'r' * size), '/r')
                accepted.append(tag)
            else:
                q.put(OutFrame('t' * size, expires=math.inf), rng.choice(['/a', '/b', None]), rng.choice([0, 0, 3]))
        except SendQueueOverflow:
            overflows += 1
        if i % 97 == 0:
            batch = q.pop_batch(rng.choice([100, 10_000]))
            popped += [f.data[:6] for f in batch if isinstance(f.data, str) and f.data.startswith('r')]
        frames, normal_bytes, critical_bytes = _held(q)
        assert frames <= 50 and normal_bytes <= 5_000 + 3_000 and critical_bytes <= 8_000 + 3_000
    popped += [f.data[:6] for f in q.pop_batch(10**9) if isinstance(f.data, str) and f.data.startswith('r')]
    assert q.dropped_total > 1_000 and overflows > 100
    assert popped == accepted and len(accepted) > 500  # reliable: never dropped, never reordered

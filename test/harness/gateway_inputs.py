"""Random rosbridge-protocol inputs for fuzzing the gateway: a grammar-aware generator (`random_input`) that
expands one seed into plausible, broken and hostile messages, plus the ROS side's answers. Used by the pure session
fuzz test (src/fleet_gateway/test/test_gateway_fuzz.py) and the socket fuzz system test."""

from __future__ import annotations

import json
import random

OPS = [
    'advertise',
    'unadvertise',
    'publish',
    'subscribe',
    'unsubscribe',
    'call_service',
    'set_level',
    'fragment',
    'status',
    'auth',
    'advertise_service',
    'unadvertise_service',
    'service_response',
    'send_action_goal',
    'cancel_action_goal',
    'advertise_action',
    'unadvertise_action',
    'action_feedback',
    'action_result',
    'bogus',
    '',
]
NAMES = ['/t', 't', '/u/v', '/fleet/a/z/estop', '/s/r/command', '/bad name', '', '//', '/9x', '/t/']
TYPES = [
    'std_msgs/String',
    'std_msgs/msg/String',
    'fleet_interfaces/ShardStatus',
    'fleet_interfaces/EStop',
    'std_msgs/UInt8MultiArray',
    'std_srvs/Trigger',
    'std_srvs/srv/SetBool',
    'fleet_interfaces/action/RunMission',
    'fleet_interfaces/RunMission',
    'nope/X',
    'std_msgs',
    'a/b/c/d',
]


def _value(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth < 3 and pick < 0.12:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 3 and pick < 0.24:
        return {rng.choice(KEYS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return (
        rng.choice(SCALARS)
        if pick < 0.7
        else rng.choice(
            (rng.randrange(-(2**40), 2**40), rng.random() * 1e6, ''.join(rng.choices(ALPHABET, k=rng.randrange(12))))
        )
    )


def _message(rng: random.Random) -> dict:
    message = {'op': rng.choice(OPS)}
    for key in rng.sample(FIELDS, rng.randrange(len(FIELDS) // 2)):
        if key in ('topic', 'service', 'action'):
            message[key] = rng.choice(NAMES)
        elif key in ('type', 'action_type'):
            message[key] = rng.choice(TYPES)
        elif key in ('msg', 'args'):
            message[key] = (
                {k: _value(rng) for k in rng.sample(MSG_FIELDS, rng.randrange(3))}
                if rng.random() < 0.8
                else _value(rng)
            )
        else:
            message[key] = _value(rng)
    if message['op'] in ('advertise_action', 'unadvertise_action') and rng.random() < 0.8:
        message.update(action=rng.choice(NAMES[:3]), type='fleet_interfaces/action/RunMission')
    if message['op'] in ('send_action_goal', 'cancel_action_goal') and rng.random() < 0.5:
        # often well-formed, so that goals get into flight and are cancelled, answered and finished
        message.update(
            id=rng.choice(['a', 'b', 1, 2]),
            action=rng.choice(NAMES[:3]),
            action_type='fleet_interfaces/action/RunMission',
        )
    return message


def random_input(rng: random.Random):
    kind = rng.random()
    if kind < 0.6:
        return ('text', json.dumps(_message(rng)))
    if kind < 0.7:
        text = json.dumps(_message(rng))
        cut = rng.randrange(len(text))
        return ('text', text[:cut] + ''.join(rng.choices(ALPHABET, k=rng.randrange(4))) + text[cut + 1 :])
    if kind < 0.78:
        return ('bytes', rng.randbytes(rng.randrange(64)))
    if kind < 0.86:
        body = {k: _value(rng) for k in rng.sample(MSG_FIELDS, rng.randrange(3))}
        return ('deliver', (rng.choice(NAMES[:5]), body, rng.random() < 0.3))
    if kind < 0.9:
        return ('batch', (rng.choice(NAMES[:5]), _value(rng), rng.random() < 0.2, rng.randrange(1, 60)))
    if kind < 0.92:
        return ('answer', rng.randrange(5))
    if kind < 0.94:
        return ('request', rng.randrange(5))
    if kind < 0.95:
        return ('goal_result', (rng.randrange(5), rng.randrange(7), rng.random() < 0.3))
    if kind < 0.96:
        return ('goal_feedback', rng.randrange(5))
    if kind < 0.965:
        return ('goal_request', rng.randrange(5))
    if kind < 0.97:
        return ('goal_cancel', rng.randrange(5))
    if kind < 0.98:
        n = rng.randrange(5)
        body = (
            {k: _value(rng) for k in rng.sample(GOAL_FIELDS, rng.randrange(3))} if rng.random() < 0.8 else _value(rng)
        )
        return ('serve', (n, body, rng.choice([4, 4, 5, 6, 0, 'x', None]), rng.choice([True, True, False, None, 'x'])))
    if kind < 0.99:
        body = (
            {k: _value(rng) for k in rng.sample(RESPONSE_FIELDS, rng.randrange(3))}
            if rng.random() < 0.8
            else _value(rng)
        )
        return ('respond', (rng.randrange(5), body, rng.choice([True, True, False, None, 'x'])))
    return ('tick', rng.random() * 12)


RESPONSE_FIELDS = ['success', 'message', 'nope']
GOAL_FIELDS = ['success', 'points_done', 'detail', 'state', 'nope']


KEYS = ['data', 'sec', 'nanosec', 'id', 'op', 'x', '']
MSG_FIELDS = ['data', 'stamp', 'queue_depth', 'lost_agent_ids', 'engaged', 'revision', 'nope']
FIELDS = [
    'id',
    'topic',
    'service',
    'type',
    'msg',
    'args',
    'throttle_rate',
    'queue_length',
    'fragment_size',
    'compression',
    'timeout',
    'level',
    'data',
    'num',
    'total',
    'token',
    'latch',
    'action',
    'action_type',
    'feedback',
]
SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**64,
    0.5,
    float('inf'),
    '',
    'a',
    'none',
    'cbor',
    'warning',
    'good-token-0123456789',
    '{"op":"publish"',
    'std_msgs/String',
    '/t',
]
ALPHABET = 'ab{}[]":,0\\/ \x00\u00e9'

"""One handler per rosbridge v2 op. Each validates its fields, checks the client's role, updates the session
and appends events for the ROS side; any ProtocolError becomes a status error carrying the request id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fleet_gateway.acl import Action
from fleet_gateway.conversion import ConversionError, action_class, codec_for, message_class, service_class
from fleet_gateway.protocol import fields
from fleet_gateway.protocol.events import (
    AdvertiseAction,
    AdvertiseService,
    AdvertiseTopic,
    CallService,
    CancelActionGoal,
    Event,
    PublishMessage,
    SendActionGoal,
    ServedGoalFeedback,
    ServedGoalResult,
    ServiceReply,
    SubscribeTopic,
    UnadvertiseAction,
    UnadvertiseService,
    UnadvertiseTopic,
    UnsubscribeTopic,
)
from fleet_gateway.protocol.fields import AuthThrottled, ProtocolError
from fleet_gateway.protocol.state import (
    CLOSE_POLICY,
    STATUS_LEVELS,
    ActiveGoal,
    Advertisement,
    IncomingGoal,
    PendingCall,
    ServedAction,
    ServedService,
    Subscription,
)

if TYPE_CHECKING:
    from fleet_gateway.protocol.session import ClientSession

Rid = str | int | None
Handler = Callable[['ClientSession', dict[str, Any], Rid, list[Event]], None]
ENCODINGS = ('none', 'cbor')
TOPIC_ENCODINGS = (*ENCODINGS, 'cbor-raw')
"""`compression` of a subscription; `cbor-raw` (rosbridge's: the serialized message, in CBOR) only there."""
SUCCEEDED, CANCELED, ABORTED = 4, 5, 6
"""action_msgs/GoalStatus codes a serving client reports in action_result."""


def _allow(session: ClientSession, action: Action, name: str) -> None:
    principal = session.principal
    if principal is None:  # the session refuses every op but auth before this; kept as a check, not an assert
        raise ProtocolError(f'not authenticated: {name} needs a role')
    if not session.policy.allows(principal.role, action, name):
        raise ProtocolError(
            f'role {principal.role.value!r} ({principal.name}) may not {action.value.replace("_", " ")} {name}'
        )


def handle_auth(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    if session.principal is not None:
        session.status('info', 'already authenticated', rid)
        return
    token = message.get('token', message.get('mac'))
    try:
        principal = session.authenticate(token) if session.authenticate and isinstance(token, str) else None
    except AuthThrottled:
        session.request_close(CLOSE_POLICY, 'too many failed authentications from this address')
        raise
    if principal is None:
        session.auth_failures += 1
        if session.auth_failures >= session.limits.max_auth_failures:
            session.request_close(CLOSE_POLICY, 'authentication failed')
        raise ProtocolError('authentication failed: unknown token')
    session.principal = principal
    session.status('info', f'authenticated as {principal.name} ({principal.role.value})', rid)


def handle_advertise(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    topic = fields.ros_name(message, 'topic')
    msg_cls = message_class(fields.text(message, 'type'))
    _allow(session, Action.PUBLISH, topic)
    existing = session.advertisements.get(topic)
    if existing is not None:
        if existing.msg_cls is not msg_cls:
            raise ProtocolError(f'{topic} is already advertised by this client with another type')
        existing.ids.add(rid)
        return
    if len(session.advertisements) >= session.limits.max_publishers:
        raise ProtocolError(f'at most {session.limits.max_publishers} advertised topics per client')
    codec = codec_for(msg_cls)  # fails now, not on the first publish, when the type cannot be converted
    session.advertisements[topic] = Advertisement(topic, msg_cls, {rid}, codec)
    events.append(AdvertiseTopic(topic, msg_cls, latch=message.get('latch') is True))


def handle_unadvertise(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    topic = fields.ros_name(message, 'topic')
    if session.advertisements.pop(topic, None) is None:
        raise ProtocolError(f'{topic} is not advertised by this client')
    events.append(UnadvertiseTopic(topic))


def handle_publish(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    topic = message.get('topic')
    # hot path: a topic spelled exactly as advertised (keys are validated, absolute names) skips name parsing
    advertised = session.advertisements.get(topic) if type(topic) is str else None
    if advertised is None:
        topic = fields.ros_name(message, 'topic')
        advertised = session.advertisements.get(topic)
        if advertised is None:
            raise ProtocolError(f'advertise {topic} (op "advertise" with its type) before publishing to it')
    payload = message.get('msg', {})
    msg = advertised.codec.to_publish(payload)  # CDR bytes for flat types, else a message instance
    session.counters['published'] += 1
    events.append(PublishMessage(advertised.topic, msg))


def _delivery_options(message: dict[str, Any], encodings: tuple[str, ...] = ENCODINGS) -> tuple[int, str]:
    """`fragment_size` (0: never fragment) and `compression` of what the gateway sends back for this request."""
    fragment_size = int(fields.number(message, 'fragment_size', 0, maximum=1e9))
    if fragment_size and fragment_size < 16:
        raise ProtocolError('field "fragment_size" must be at least 16')
    encoding = fields.text(message, 'compression', required=False, default='none')
    if encoding not in encodings:
        raise ProtocolError(f'compression {encoding[:20]!r} is not supported (use one of {", ".join(encodings)})')
    return fragment_size, encoding


def handle_subscribe(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    topic = fields.ros_name(message, 'topic')
    _allow(session, Action.SUBSCRIBE, topic)
    given = fields.text(message, 'type', required=False)
    type_name = given or session.resolve_topic_type(topic)
    if not type_name:
        raise ProtocolError(f'no type given for {topic} and no publisher advertises it yet: add "type"')
    msg_cls = message_class(type_name)
    throttle_ms = fields.number(message, 'throttle_rate', 0.0, maximum=3_600_000)
    queue_length = int(fields.number(message, 'queue_length', 0, maximum=session.limits.send_queue_frames))
    fragment_size, encoding = _delivery_options(message, TOPIC_ENCODINGS)
    sub = session.subscriptions.get(topic)
    if sub is not None and sub.msg_cls is not msg_cls:
        raise ProtocolError(f'{topic} is already subscribed by this client with another type')
    if sub is None:
        if len(session.subscriptions) >= session.limits.max_subscriptions:
            raise ProtocolError(f'at most {session.limits.max_subscriptions} subscriptions per client')
        codec_for(msg_cls)
        sub = Subscription(topic, msg_cls, critical=session.policy.is_critical(topic))
        session.subscriptions[topic] = sub
        events.append(SubscribeTopic(topic, msg_cls, rid))
    elif rid not in sub.options and len(sub.options) >= 64:
        raise ProtocolError(f'at most 64 subscribe ids per topic ({topic})')
    sub.options[rid] = (throttle_ms / 1000.0, queue_length, fragment_size, encoding)
    sub.merge()


def handle_unsubscribe(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    topic = fields.ros_name(message, 'topic')
    sub = session.subscriptions.get(topic)
    if sub is None:
        raise ProtocolError(f'{topic} is not subscribed by this client')
    if rid is not None and rid in sub.options and len(sub.options) > 1:
        del sub.options[rid]
        sub.merge()
        return
    del session.subscriptions[topic]
    events.append(UnsubscribeTopic(topic))


def handle_call_service(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    service = fields.ros_name(message, 'service')
    _allow(session, Action.CALL_SERVICE, service)
    given = fields.text(message, 'type', required=False)
    type_name = given or session.resolve_service_type(service)
    if not type_name:
        raise ProtocolError(f'no type given for service {service} and no server offers it: add "type"')
    srv_cls = service_class(type_name)
    limits = session.limits
    timeout_s = fields.number(
        message, 'timeout', limits.call_timeout_s, minimum=0.001, maximum=limits.max_call_timeout_s
    )
    if len(session.pending_calls) >= limits.max_pending_calls:
        raise ProtocolError(f'at most {limits.max_pending_calls} service calls in flight per client')
    args = message.get('args')
    if args is None or args == []:  # roslibjs sends [] for an empty request
        args = {}
    request = codec_for(srv_cls.Request).from_json(args)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    call_no = session.new_call_no()
    session.pending_calls[call_no] = PendingCall(rid, service, srv_cls.Response)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    events.append(CallService(call_no, service, srv_cls, request, timeout_s))


def _served_already(name: str, current: type | None, wanted: type, count: int, limit: int, kind: str) -> bool:
    """True when this client already serves `name` with the `wanted` type (advertising again changes nothing);
    raises when it serves it with another type, or when a new one would exceed `limit`."""
    if current is not None:
        if current is not wanted:
            raise ProtocolError(f'{name} is already advertised by this client with another type')
        return True
    if count >= limit:
        raise ProtocolError(f'at most {limit} advertised {kind} per client')
    return False


def handle_advertise_service(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    service = fields.ros_name(message, 'service')
    srv_cls = service_class(fields.text(message, 'type'))
    _allow(session, Action.ADVERTISE_SERVICE, service)
    existing = session.served.get(service)
    current = existing.srv_cls if existing else None
    limit = session.limits.max_served_services
    if _served_already(service, current, srv_cls, len(session.served), limit, 'services'):
        return
    codec_for(srv_cls.Request)  # type: ignore[attr-defined]  # fails now, not on the first call
    codec_for(srv_cls.Response)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    session.served[service] = ServedService(service, srv_cls)
    events.append(AdvertiseService(service, srv_cls, rid))


def handle_unadvertise_service(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    service = fields.ros_name(message, 'service')
    if session.served.pop(service, None) is None:
        raise ProtocolError(f'{service} is not advertised by this client')
    session.forget_incoming(service)  # the ROS side fails the calls still waiting when it destroys the service
    events.append(UnadvertiseService(service))


def handle_service_response(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    if rid is None:
        raise ProtocolError('a service_response needs the "id" of the call_service it answers')
    if not isinstance(rid, str) or rid not in session.incoming_calls:
        raise ProtocolError(f'no call with id {rid!r} is waiting for a response (unknown, answered or timed out)')
    call = session.incoming_calls[rid]
    named = fields.text(message, 'service', required=False)
    if named and fields.ros_name(message, 'service') != call.service:
        raise ProtocolError(f'call {rid!r} is for {call.service}, not {named[:80]}')
    result = message.get('result', True)
    if not isinstance(result, bool):
        raise ProtocolError(f'field "result" must be true or false, got {type(result).__name__}')
    del session.incoming_calls[rid]
    served = session.served.get(call.service)
    if served is None:  # unadvertised meanwhile: the ROS side already answered the caller
        return
    values = message.get('values')
    if not result:
        reason = values if isinstance(values, str) else 'the serving client reported a failure'
        events.append(ServiceReply(call.service, call.token, None, f'{call.service}: {reason[:200]}'))
        return
    if values is None or values == []:
        values = {}
    try:
        response = codec_for(served.srv_cls.Response).from_json(values)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    except ConversionError as exc:
        events.append(ServiceReply(call.service, call.token, None, f'{call.service}: invalid response from client'))
        raise ProtocolError(f'values do not fit {call.service}: {exc} (the ROS caller got a failed response)') from None
    session.counters['served'] += 1
    events.append(ServiceReply(call.service, call.token, response))


def handle_send_action_goal(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    action = fields.ros_name(message, 'action')
    _allow(session, Action.SEND_ACTION_GOAL, action)
    action_cls = action_class(fields.text(message, 'action_type'))
    feedback = message.get('feedback', False)
    if feedback is None:
        feedback = False
    if not isinstance(feedback, bool):
        raise ProtocolError(f'field "feedback" must be true or false, got {type(feedback).__name__}')
    fragment_size, encoding = _delivery_options(message)
    limits = session.limits
    if len(session.goals) >= limits.max_action_goals:
        raise ProtocolError(f'at most {limits.max_action_goals} action goals in flight per client')
    if rid is not None and rid in session.goal_ids:
        raise ProtocolError(f'a goal with id {rid!r} is still in flight: give each goal an id of its own')
    args = message.get('args')
    if args is None or args == []:  # like call_service: no args, or an empty list, is an all-default goal
        args = {}
    goal = codec_for(action_cls.Goal).from_json(args)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    codec_for(action_cls.Feedback)  # type: ignore[attr-defined]  # fails now, not when the first one arrives
    codec_for(action_cls.Result)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    goal_no = session.new_call_no()
    session.goals[goal_no] = ActiveGoal(goal_no, rid, action, action_cls, feedback, fragment_size, encoding)
    if rid is not None:
        session.goal_ids[rid] = goal_no
    session.counters['action_goals'] += 1
    events.append(SendActionGoal(goal_no, action, action_cls, goal, feedback, limits.action_server_wait_s))


def handle_cancel_action_goal(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    if rid is None:
        raise ProtocolError('a cancel_action_goal needs the "id" of the send_action_goal it cancels')
    action = fields.ros_name(message, 'action')
    goal_no = session.goal_ids.get(rid)
    goal = session.goals.get(goal_no) if goal_no is not None else None
    if goal is None:
        raise ProtocolError(f'no goal with id {rid!r} is in flight (unknown, or its action_result was sent)')
    if goal.action != action:
        raise ProtocolError(f'goal {rid!r} was sent to {goal.action}, not {action}')
    if goal.cancel_requested:
        return  # asked already; the action_result tells how it ended
    goal.cancel_requested = True
    events.append(CancelActionGoal(goal.goal_no, action))


def handle_advertise_action(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    action = fields.ros_name(message, 'action')
    advertised_type = fields.text(message, 'type')
    action_cls = action_class(advertised_type)
    _allow(session, Action.ADVERTISE_ACTION, action)
    existing = session.served_actions.get(action)
    current = existing.action_cls if existing else None
    limit = session.limits.max_served_actions
    if _served_already(action, current, action_cls, len(session.served_actions), limit, 'actions'):
        return
    for part in ('Goal', 'Feedback', 'Result'):  # fails now, not on the first goal
        codec_for(getattr(action_cls, part))
    session.served_actions[action] = ServedAction(action, action_cls, advertised_type)
    events.append(AdvertiseAction(action, action_cls, rid))


def handle_unadvertise_action(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    action = fields.ros_name(message, 'action')
    if session.served_actions.pop(action, None) is None:
        raise ProtocolError(f'{action} is not advertised by this client')
    session.forget_incoming_goals(action)  # the ROS side aborts the goals still in flight
    events.append(UnadvertiseAction(action))


def _incoming_goal(session: ClientSession, message: dict[str, Any], rid: Rid) -> tuple[IncomingGoal, ServedAction]:
    """The forwarded goal an action_feedback or action_result is about."""
    op = message.get('op')
    if rid is None:
        raise ProtocolError(f'an {op} needs the "id" of the send_action_goal it answers')
    goal = session.incoming_goals.get(rid) if isinstance(rid, str) else None
    if goal is None:
        raise ProtocolError(f'no goal with id {rid!r} is in flight (unknown, finished or timed out)')
    named = fields.text(message, 'action', required=False)
    if named and fields.ros_name(message, 'action') != goal.action:
        raise ProtocolError(f'goal {rid!r} is for {goal.action}, not {named[:80]}')
    return goal, session.served_actions[goal.action]


def _action_values(message: dict[str, Any]) -> dict[str, Any]:
    values = message.get('values')
    return {} if values is None or values == [] else values


def handle_action_feedback(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    goal, served = _incoming_goal(session, message, rid)
    feedback = codec_for(served.action_cls.Feedback).from_json(_action_values(message))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    events.append(ServedGoalFeedback(goal.action, goal.token, feedback))


def handle_action_result(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    goal, served = _incoming_goal(session, message, rid)
    result = message.get('result', True)
    if not isinstance(result, bool):
        raise ProtocolError(f'field "result" must be true or false, got {type(result).__name__}')
    status = message.get('status', SUCCEEDED if result else ABORTED)
    if type(status) is not int:
        raise ProtocolError(f'field "status" must be an integer GoalStatus code, got {type(status).__name__}')
    del session.incoming_goals[goal.goal_id]
    if not result or status not in (SUCCEEDED, CANCELED):
        session.counters['served_goals_failed'] += 1
        events.append(ServedGoalResult(goal.action, goal.token, ABORTED, None, 'the serving client reported a failure'))
        return
    try:
        values = codec_for(served.action_cls.Result).from_json(_action_values(message))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    except ConversionError as exc:
        session.counters['served_goals_failed'] += 1
        events.append(ServedGoalResult(goal.action, goal.token, ABORTED, None, 'invalid result from the client'))
        raise ProtocolError(f'values do not fit {goal.action}: {exc} (the ROS goal was aborted)') from None
    session.counters['served_goals'] += 1
    events.append(ServedGoalResult(goal.action, goal.token, status, values))


def handle_set_level(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    level = fields.text(message, 'level')
    if level not in STATUS_LEVELS:
        raise ProtocolError(f'level must be one of {", ".join(STATUS_LEVELS)}, got {level[:20]!r}')
    session.status_level = STATUS_LEVELS[level]


def handle_fragment(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    if rid is None:
        raise ProtocolError('a fragment needs the "id" of the message it belongs to')
    data = fields.text(message, 'data')
    num = message.get('num')
    total = message.get('total')
    if type(num) is not int or type(total) is not int:
        raise ProtocolError('fields "num" and "total" must be integers')
    whole = session.fragments.add(rid, data, num, total, session.clock())
    if whole is None:
        return
    try:
        inner = json.loads(whole)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f'reassembled message is not valid JSON: {str(exc)[:120]}') from None
    if not isinstance(inner, dict) or inner.get('op') == 'fragment':
        raise ProtocolError('a reassembled message must be a JSON object and not another fragment')
    session.dispatch(inner, events)


def handle_status(session: ClientSession, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
    """Clients may send status lines; they are accepted and ignored."""


HANDLERS: dict[str, Handler] = {
    'advertise': handle_advertise,
    'unadvertise': handle_unadvertise,
    'publish': handle_publish,
    'subscribe': handle_subscribe,
    'unsubscribe': handle_unsubscribe,
    'call_service': handle_call_service,
    'advertise_service': handle_advertise_service,
    'unadvertise_service': handle_unadvertise_service,
    'service_response': handle_service_response,
    'set_level': handle_set_level,
    'fragment': handle_fragment,
    'status': handle_status,
    'send_action_goal': handle_send_action_goal,
    'cancel_action_goal': handle_cancel_action_goal,
    'advertise_action': handle_advertise_action,
    'unadvertise_action': handle_unadvertise_action,
    'action_feedback': handle_action_feedback,
    'action_result': handle_action_result,
}

"""One connected client's protocol state: parses its text, applies ACLs and limits, queues its outgoing frames.

No sockets and no rclpy here. The server feeds `receive_text`/`receive_bytes`, applies the returned events to ROS,
hands ROS messages back through `deliver`, service answers through `service_result`, ROS calls to services
this client serves through `service_request`, ROS goals and cancel requests to actions it serves through
`goal_request` and `goal_cancel_request`, and the progress of its own action goals through `action_feedback` and
`action_result`, sends what `outbox` holds, calls `poll` at `next_wake()` (applying the events it returns), and
calls `finish()` once when the connection ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from fleet_gateway.acl import AccessPolicy, Principal
from fleet_gateway.conversion import ConversionError, UnknownType, codec_for, type_name
from fleet_gateway.protocol.events import (
    CancelActionGoal,
    CloseConnection,
    Event,
    ServedGoalResult,
    ServiceReply,
    UnadvertiseAction,
    UnadvertiseService,
    UnadvertiseTopic,
    UnsubscribeTopic,
)
from fleet_gateway.protocol.fields import ProtocolError, request_id
from fleet_gateway.protocol.fragments import FragmentBuffer
from fleet_gateway.protocol.handlers import ABORTED, HANDLERS, handle_auth
from fleet_gateway.protocol.outbox import OutFrame, SendQueue, SendQueueOverflow
from fleet_gateway.protocol.published import PublishedMessage, dumps
from fleet_gateway.protocol.state import (
    CLOSE_POLICY,
    CLOSE_TRY_AGAIN,
    STATUS_LEVELS,
    ActiveGoal,
    Advertisement,
    IncomingCall,
    IncomingGoal,
    PendingCall,
    ServedAction,
    ServedService,
    SessionLimits,
    Subscription,
)
from fleet_gateway.ratelimit import TokenBucket


class ClientSession:
    """Protocol state of one client. `client_id` appears in every log line and status message about it."""

    def __init__(
        self,
        client_id: str,
        *,
        policy: AccessPolicy,
        principal: Principal | None = None,
        limits: SessionLimits | None = None,
        authenticate: Callable[[str], Principal | None] | None = None,
        resolve_topic_type: Callable[[str], str | None] | None = None,
        resolve_service_type: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.policy = policy
        self.principal = principal
        self.limits = limits or SessionLimits()
        self.authenticate = authenticate
        self.resolve_topic_type = resolve_topic_type or (lambda _topic: None)
        self.resolve_service_type = resolve_service_type or (lambda _service: None)
        self.clock = clock
        self.outbox = SendQueue(
            max_frames=self.limits.send_queue_frames,
            max_bytes=self.limits.send_queue_bytes,
            critical_max_bytes=self.limits.critical_queue_bytes,
        )
        self.subscriptions: dict[str, Subscription] = {}
        self.advertisements: dict[str, Advertisement] = {}
        self.pending_calls: dict[int, PendingCall] = {}
        self.served: dict[str, ServedService] = {}
        self.incoming_calls: dict[str, IncomingCall] = {}
        """ROS calls forwarded to this client, by call_service id; oldest (earliest deadline) first."""
        self.served_actions: dict[str, ServedAction] = {}
        self.incoming_goals: dict[str, IncomingGoal] = {}
        """ROS goals forwarded to this client, by send_action_goal id; oldest (earliest deadline) first."""
        self.goals: dict[int, ActiveGoal] = {}
        """Action goals this client sent whose action_result has not gone out, by goal number."""
        self.goal_ids: dict[str | int, int] = {}
        """Goal numbers by the send_action_goal id (goals sent without an id cannot be cancelled)."""
        self.fragments = FragmentBuffer(
            max_bytes=self.limits.max_message_bytes,
            max_messages=self.limits.max_fragmented_messages,
            timeout_s=self.limits.fragment_timeout_s,
        )
        self.status_level = STATUS_LEVELS[self.limits.status_level]
        self.close_request: CloseConnection | None = None
        self.finished = False
        self.auth_failures = 0
        self.auth_deadline = clock() + self.limits.auth_timeout_s if principal is None else None
        """When an unauthenticated client is closed (None once authenticated, or when it came with a principal)."""
        self.read_pause = 0.0
        self.counters = {
            'received': 0,
            'errors': 0,
            'published': 0,
            'delivered': 0,
            'throttle_dropped': 0,
            'served': 0,
            'served_failed': 0,
            'action_goals': 0,
            'action_goals_failed': 0,
            'served_goals': 0,
            'served_goals_failed': 0,
            'shed': 0,
        }
        self.shed_by_topic: dict[str, int] = {}
        """Incoming publishes the gateway dropped unparsed because it was over capacity, by topic."""
        self._reported_shed = 0
        self._next_shed_report = 0.0
        self._bucket = TokenBucket(self.limits.ops_per_s, self.limits.ops_burst, clock=clock)
        self._next_call_no = 0
        self._reported_drops = 0
        self._reported_stale = 0
        self._next_drop_report = 0.0
        self._throttle_wake: float | None = None
        self.backlog_keep = 0
        """Set by the transport while this client is behind (its in-flight window is full): how many frames per
        telemetry topic are worth queueing (about what it reads within a staleness bound); 0: no such cap."""
        self.backlog_rate = 0.0
        """Set with `backlog_keep`: frames per second the client reads. Of each telemetry batch a client that is
        behind takes only the newest it can read until the next one (the rest counted as dropped at once), so the
        fan-out costs what clients read, not clients x messages."""

    # --- input ------------------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[Event]:
        """Handle one incoming text frame; returns what the ROS side must do."""
        events: list[Event] = []
        if self.finished or self.close_request is not None:
            return events
        self.counters['received'] += 1
        self.read_pause = self._bucket.take_delay(1.0)
        if len(text) > self.limits.max_message_bytes:
            self.error(f'message of {len(text)} characters exceeds the {self.limits.max_message_bytes} limit', None)
            return events
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            self.error(f'malformed JSON: {str(exc)[:120]}', None)
            return events
        if not isinstance(message, dict):
            self.error(f'a protocol message must be a JSON object, got {type(message).__name__}', None)
            return events
        self.dispatch(message, events)
        return events

    def receive_bytes(self, data: bytes) -> list[Event]:
        """Handle one incoming binary frame: a CBOR-encoded protocol message (as rosbridge accepts)."""
        events: list[Event] = []
        if self.finished or self.close_request is not None:
            return events
        self.counters['received'] += 1
        self.read_pause = self._bucket.take_delay(1.0)
        if len(data) > self.limits.max_message_bytes:
            self.error(f'message of {len(data)} bytes exceeds the {self.limits.max_message_bytes} limit', None)
            return events
        try:
            message = cbor2.loads(data)
        except Exception as exc:  # noqa: BLE001 - untrusted bytes: cbor2 raises many types (CBORDecodeError, RecursionError, ...)
            self.error(f'binary frames must hold one CBOR-encoded protocol message: {str(exc)[:120]}', None)
            return events
        if not isinstance(message, dict) or not all(isinstance(k, str) for k in message):
            kind = type(message).__name__
            self.error(f'binary frames must hold a CBOR map with text keys (a protocol message), got {kind}', None)
            return events
        self.dispatch(message, events)
        return events

    def dispatch(self, message: dict[str, Any], events: list[Event]) -> None:
        rid = request_id(message)
        op = message.get('op')
        if not isinstance(op, str):
            self.error('missing "op" field (a string such as "subscribe")', rid)
            return
        try:
            if self.principal is None and op != 'auth':
                raise ProtocolError(f'not authenticated: send {{"op": "auth", "token": ...}} before "{op}"')
            handler = handle_auth if op == 'auth' else HANDLERS.get(op)
            if handler is None:
                raise ProtocolError(f'unknown op "{op[:40]}"')
            handler(self, message, rid, events)
        except (ProtocolError, ConversionError, UnknownType) as exc:
            self.error(f'{op[:40]}: {exc}', rid)

    # --- output -----------------------------------------------------------------------------------------

    def send(self, message: dict[str, Any], *, critical: bool = True) -> None:
        self._put(OutFrame(dumps(message), critical=critical), None, 0)

    def status(self, level: str, text: str, rid: str | int | None) -> None:
        if STATUS_LEVELS[level] < self.status_level:
            return
        message: dict[str, Any] = {'op': 'status', 'level': level, 'msg': text}
        if rid is not None:
            message['id'] = rid
        self.send(message)

    def error(self, text: str, rid: str | int | None) -> None:
        self.counters['errors'] += 1
        self.status('error', text, rid)

    def request_close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = CloseConnection(code, reason[:120])

    def _put(self, frame: OutFrame, key: str | None, key_limit: int) -> None:
        try:
            self.outbox.put(frame, key, key_limit)
        except SendQueueOverflow as exc:
            self.request_close(CLOSE_TRY_AGAIN, f'send queue overflow: {exc}')

    # --- from the ROS side ------------------------------------------------------------------------------

    def deliver(self, published: PublishedMessage, now: float) -> None:
        """A message arrived on a topic this client subscribes to."""
        sub = self.subscriptions.get(published.topic)
        if sub is None or self.close_request is not None:
            return
        if sub.throttle_s > 0 and not sub.critical:
            if now - sub.last_sent < sub.throttle_s:
                if len(sub.pending) >= max(1, sub.queue_length):
                    sub.pending.popleft()
                    self.counters['throttle_dropped'] += 1
                sub.pending.append(published)
                wake = sub.last_sent + sub.throttle_s
                if self._throttle_wake is None or wake < self._throttle_wake:
                    self._throttle_wake = wake
                return
            sub.last_sent = now
        self._enqueue(sub, published)
        if self.outbox.dropped_total != self._reported_drops and now >= self._next_drop_report:
            self._report_drops(now)

    def deliver_batch(self, topic: str, batch: list[PublishedMessage], now: float) -> None:
        """Several messages of one topic, oldest first (what one hand-off from the ROS thread carries).

        Equivalent to `deliver` per message, but when a batch is longer than what the subscription may hold the
        older surplus is counted as dropped at once instead of being queued and evicted one by one."""
        sub = self.subscriptions.get(topic)
        if sub is None or self.close_request is not None:
            return
        if sub.critical or sub.throttle_s > 0 or sub.fragment_size or len(batch) == 1:
            for published in batch:
                self.deliver(published, now)
            return
        keep = sub.queue_length or self.limits.send_queue_frames
        queue_length = sub.queue_length
        if self.backlog_keep and batch[-1].expires is not None and self.backlog_keep < keep:
            keep = queue_length = self.backlog_keep  # behind on telemetry: more would only go stale here
            keep = min(keep, 1 + int(self.backlog_rate * max(0.0, now - sub.last_batch)))
        sub.last_batch = now
        if len(batch) > keep:
            surplus = len(batch) - keep
            self.outbox.count_drops(topic, surplus)
            batch = batch[surplus:]
        encoding = sub.encoding
        put = self.outbox.put
        for published in batch:
            put(published.frame(encoding), topic, queue_length)
        self.counters['delivered'] += len(batch)
        if self.outbox.dropped_total != self._reported_drops and now >= self._next_drop_report:
            self._report_drops(now)

    def note_stale(self, topic: str, count: int, now: float) -> None:
        """`count` messages of `topic` were already past their staleness bound when they reached the fan-out."""
        if topic in self.subscriptions and self.close_request is None:
            self.outbox.count_drops(topic, count, stale=True)
            if now >= self._next_drop_report:
                self._report_drops(now)

    def _enqueue(self, sub: Subscription, published: PublishedMessage) -> None:
        self.counters['delivered'] += 1
        frame = published.frame(sub.encoding)
        if sub.fragment_size and frame.size > sub.fragment_size and isinstance(frame.data, str):
            for piece in self._fragment(frame.data, sub.fragment_size, critical=frame.critical):
                self._put(piece, None, 0)
            return
        self._put(frame, sub.topic, sub.queue_length)

    def _fragment(self, text: str, size: int, *, critical: bool) -> list[OutFrame]:
        self._next_call_no += 1
        fid = f'{self.client_id}:frag:{self._next_call_no}'
        total = (len(text) + size - 1) // size
        return [
            OutFrame(
                dumps({'op': 'fragment', 'id': fid, 'data': text[i * size : (i + 1) * size], 'num': i, 'total': total}),
                critical=critical,
            )
            for i in range(total)
        ]

    def _report_drops(self, now: float) -> None:
        new = self.outbox.dropped_total - self._reported_drops
        stale = self.outbox.stale_total - self._reported_stale
        self._reported_drops = self.outbox.dropped_total
        self._reported_stale = self.outbox.stale_total
        self._next_drop_report = now + self.limits.drop_report_interval_s
        why = f', {stale} of them older than their staleness bound (max_staleness_ms)' if stale else ''
        self.status(
            'warning',
            f'client {self.client_id} is not keeping up: dropped {new} telemetry messages{why} '
            f'({self.outbox.dropped_total} in total; by topic {_top_three(self.outbox.drops)})',
            None,
        )

    def note_shed(self, topic: str, count: int, now: float) -> None:
        """The gateway dropped `count` of this client's publishes to a best-effort topic without parsing them (over
        capacity). Counted; the client is told like for outgoing drops, at most once per drop_report_interval_s."""
        self.counters['shed'] += count
        self.shed_by_topic[topic] = self.shed_by_topic.get(topic, 0) + count
        if now < self._next_shed_report:
            return
        total = self.counters['shed']
        new = total - self._reported_shed
        self._reported_shed = total
        self._next_shed_report = now + self.limits.drop_report_interval_s
        self.status(
            'warning',
            f'the gateway is over capacity: dropped {new} of your publishes to best-effort topics '
            f'({total} in total; by topic {_top_three(self.shed_by_topic)})',
            None,
        )

    def new_call_no(self) -> int:
        self._next_call_no += 1
        return self._next_call_no

    def service_result(self, call_no: int, response: Any | None, error: str | None = None) -> None:
        """The answer (or failure text) of a CallService event this session emitted."""
        call = self.pending_calls.pop(call_no, None)
        if call is None or self.finished:
            return
        message: dict[str, Any] = {'op': 'service_response', 'service': call.service}
        if call.request_id is not None:
            message['id'] = call.request_id
        if error is None and response is not None:
            message['values'] = codec_for(call.response_cls).to_json(response)
            message['result'] = True
        else:
            message['values'] = error or 'service call failed'
            message['result'] = False
        self.send(message)

    def service_request(self, service: str, token: int, request: Any) -> list[Event]:
        """A ROS caller called `service`, which this client serves: forward it as a `call_service` with a fresh id.

        Returns the events to apply now: a failed `ServiceReply` when the call cannot be forwarded."""
        served = self.served.get(service)
        if served is None or self.finished or self.close_request is not None:
            return [ServiceReply(service, token, None, f'{service}: the serving client is gone')]
        if len(self.incoming_calls) >= self.limits.max_served_calls:
            self.counters['served_failed'] += 1
            return [
                ServiceReply(
                    service,
                    token,
                    None,
                    f'{service}: the serving client has {self.limits.max_served_calls} calls in flight already',
                )
            ]
        call_id = f'service_request:{service}:{self.new_call_no()}'  # rosbridge's form of these ids
        args = codec_for(served.srv_cls.Request).to_json(request)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        deadline = self.clock() + self.limits.served_call_timeout_s
        self.incoming_calls[call_id] = IncomingCall(call_id, service, token, deadline)
        self.send({'op': 'call_service', 'id': call_id, 'service': service, 'args': args})
        return []

    # --- action goals to actions this client serves ---------------------------------------------------

    def goal_request(self, action: str, token: int, goal: Any) -> list[Event]:
        """A ROS goal arrived for `action`, which this client serves: forward it as a `send_action_goal` with a
        fresh id. Returns the events to apply now: an aborting `ServedGoalResult` when it cannot be forwarded."""
        served = self.served_actions.get(action)
        if served is None or self.finished or self.close_request is not None:
            return [ServedGoalResult(action, token, ABORTED, None, f'{action}: the serving client is gone')]
        if len(self.incoming_goals) >= self.limits.max_served_goals:
            self.counters['served_goals_failed'] += 1
            why = f'{action}: the serving client has {self.limits.max_served_goals} goals in flight already'
            return [ServedGoalResult(action, token, ABORTED, None, why)]
        goal_id = f'send_action_goal:{action}:{self.new_call_no()}'
        args = codec_for(served.action_cls.Goal).to_json(goal)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        deadline = self.clock() + self.limits.served_goal_timeout_s
        self.incoming_goals[goal_id] = IncomingGoal(goal_id, action, token, deadline)
        self.send(
            {
                'op': 'send_action_goal',
                'id': goal_id,
                'action': action,
                'action_type': served.type_name or type_name(served.action_cls),  # as the client advertised it
                'args': args,
                'feedback': True,
            }
        )
        return []

    def goal_cancel_request(self, action: str, token: int) -> None:
        """A ROS client asked to cancel a goal this client is serving: tell it with `cancel_action_goal`."""
        for goal in self.incoming_goals.values():
            if goal.token == token and goal.action == action:
                self.send({'op': 'cancel_action_goal', 'id': goal.goal_id, 'action': action})
                return

    def forget_incoming_goals(self, action: str) -> None:
        """Drop the forwarded goals of one action (unadvertised: the ROS side aborts them)."""
        for goal_id in [k for k, goal in self.incoming_goals.items() if goal.action == action]:
            del self.incoming_goals[goal_id]

    # --- action goals this client sent ---------------------------------------------------------------

    def action_feedback(self, goal_no: int, feedback: Any) -> None:
        """Feedback (the action's Feedback message) for a goal sent with `"feedback": true`. Sent in the lane that
        is never dropped, like the result, so that a goal's feedback never arrives after its result."""
        goal = self.goals.get(goal_no)
        if goal is None or not goal.feedback or self.finished or self.close_request is not None:
            return
        values = codec_for(goal.action_cls.Feedback).to_json(feedback)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        message: dict[str, Any] = {'op': 'action_feedback', 'action': goal.action, 'values': values}
        if goal.request_id is not None:
            message['id'] = goal.request_id
        self._send_for_goal(goal, message)

    def action_result(self, goal_no: int, status: int, result: Any | None, error: str | None = None) -> None:
        """How a goal ended: `result` (the action's Result message) with its GoalStatus code, or, when the goal
        never ran (no action server, rejected, gateway failure), `error`: the client gets a status error carrying
        the goal id and an `action_result` with `result: false` and the reason as `values`. Once per goal."""
        goal = self.goals.pop(goal_no, None)
        if goal is None or self.finished:
            return
        if goal.request_id is not None:
            self.goal_ids.pop(goal.request_id, None)
        message: dict[str, Any] = {'op': 'action_result', 'action': goal.action}
        if goal.request_id is not None:
            message['id'] = goal.request_id
        if error is None and result is not None:
            message['values'] = codec_for(goal.action_cls.Result).to_json(result)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
            message['status'] = status
            message['result'] = True
        else:
            self.counters['action_goals_failed'] += 1
            why = error or f'goal to {goal.action} failed'
            self.error(f'send_action_goal: {why}', goal.request_id)
            message['values'] = why
            message['status'] = status
            message['result'] = False
        self._send_for_goal(goal, message)

    def _send_for_goal(self, goal: ActiveGoal, message: dict[str, Any]) -> None:
        """Encode with the goal's `compression` and split by its `fragment_size` (JSON text only)."""
        if goal.encoding == 'cbor':
            self._put(OutFrame(cbor2.dumps(message), critical=True), None, 0)
            return
        text = dumps(message)
        if goal.fragment_size and len(text) > goal.fragment_size:
            for piece in self._fragment(text, goal.fragment_size, critical=True):
                self._put(piece, None, 0)
            return
        self._put(OutFrame(text, critical=True), None, 0)

    def forget_incoming(self, service: str) -> None:
        """Drop the forwarded calls of one service (unadvertised: the ROS side answers their callers)."""
        for call_id in [k for k, call in self.incoming_calls.items() if call.service == service]:
            del self.incoming_calls[call_id]

    # --- time -------------------------------------------------------------------------------------------

    def next_wake(self) -> float | None:
        """When `poll` must run next (throttled subscriptions, fragment timeouts), or None."""
        incoming = next(iter(self.incoming_calls.values())).deadline if self.incoming_calls else None
        goal = next(iter(self.incoming_goals.values())).deadline if self.incoming_goals else None
        auth = self.auth_deadline if self.principal is None else None
        report = self._next_drop_report if self.outbox.dropped_total != self._reported_drops else None
        wakes = (self._throttle_wake, self.fragments.next_deadline(), incoming, goal, auth, report)
        deadlines = [d for d in wakes if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[Event]:
        """Time-driven work: throttled deliveries, fragment and served-call timeouts. Returns events to apply."""
        events: list[Event] = []
        if self.principal is None and self.auth_deadline is not None and now >= self.auth_deadline:
            self.request_close(CLOSE_POLICY, f'not authenticated within {self.limits.auth_timeout_s:g} s')
            self.auth_deadline = None
        while self.incoming_calls:
            call = next(iter(self.incoming_calls.values()))
            if call.deadline > now:
                break
            del self.incoming_calls[call.call_id]
            self.counters['served_failed'] += 1
            limit = self.limits.served_call_timeout_s
            why = f'{call.service}: no response within {limit:g} s'
            events.append(ServiceReply(call.service, call.token, None, why))
            self.status('warning', f'call {call.call_id} got no service_response within {limit:g} s', call.call_id)
        while self.incoming_goals:
            goal = next(iter(self.incoming_goals.values()))
            if goal.deadline > now:
                break
            del self.incoming_goals[goal.goal_id]
            self.counters['served_goals_failed'] += 1
            limit = self.limits.served_goal_timeout_s
            why = f'no action_result within {limit:g} s'
            events.append(ServedGoalResult(goal.action, goal.token, ABORTED, None, why))
            self.status('warning', f'goal {goal.goal_id} got no action_result within {limit:g} s', goal.goal_id)
        for message_id in self.fragments.expire(now):
            self.error(f'fragmented message never completed within {self.limits.fragment_timeout_s:g} s', message_id)
        if self._throttle_wake is not None and now >= self._throttle_wake:
            self._throttle_wake = None
            for sub in self.subscriptions.values():
                if not sub.pending:
                    continue
                due = sub.last_sent + sub.throttle_s
                if now >= due:
                    sub.last_sent = now
                    self._enqueue(sub, sub.pending.popleft())
                    due = now + sub.throttle_s
                if sub.pending and (self._throttle_wake is None or due < self._throttle_wake):
                    self._throttle_wake = due
        if self.outbox.dropped_total != self._reported_drops and now >= self._next_drop_report:
            self._report_drops(now)
        return events

    # --- end --------------------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """Release everything this client holds; returns the ROS-side clean-up. Idempotent."""
        if self.finished:
            return []
        self.finished = True
        events: list[Event] = [UnsubscribeTopic(topic) for topic in self.subscriptions]
        events.extend(UnadvertiseTopic(topic) for topic in self.advertisements)
        events.extend(UnadvertiseService(service) for service in self.served)  # fails their waiting ROS calls
        events.extend(UnadvertiseAction(action) for action in self.served_actions)  # aborts their ROS goals
        events.extend(CancelActionGoal(goal.goal_no, goal.action) for goal in self.goals.values())
        self.subscriptions.clear()
        self.advertisements.clear()
        self.served.clear()
        self.incoming_calls.clear()
        self.served_actions.clear()
        self.incoming_goals.clear()
        self.pending_calls.clear()
        self.goals.clear()
        self.goal_ids.clear()
        self.outbox.clear()
        return events

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            'dropped': self.outbox.dropped_total,
            'stale_dropped': self.outbox.stale_total,
            'drops_by_topic': {str(k): v for k, v in self.outbox.drops.items()},
            'shed_by_topic': dict(self.shed_by_topic),
            'queued_frames': len(self.outbox),
            'queued_bytes': self.outbox.bytes,
            'subscriptions': len(self.subscriptions),
            'pending_calls': len(self.pending_calls),
            'served_services': len(self.served),
            'incoming_calls': len(self.incoming_calls),
            'goals_in_flight': len(self.goals),
            'served_actions': len(self.served_actions),
            'incoming_goals': len(self.incoming_goals),
        }


def _top_three(counts: Mapping[Any, int]) -> str:
    """The three largest counts, for a drop report: "topic: n, ..."."""
    worst = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return ', '.join(f'{key}: {count}' for key, count in worst)

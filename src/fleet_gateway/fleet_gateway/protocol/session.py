"""One connected client's protocol state: parses its frames, routes each op to the capability that owns it, queues
its outgoing frames.

No sockets and no rclpy here. The capabilities (auth, topics, service calls, served services, action goals, served
actions, fragments; one module each) own their state and talk back through `SessionPort`, which this class
implements. The server feeds `receive_text`/`receive_bytes`, applies the returned events to ROS, hands ROS messages
back through `deliver`, service answers through `service_result`, ROS calls to services this client serves through
`service_request`, ROS goals and cancel requests to actions it serves through `goal_request` and
`goal_cancel_request`, and the progress of its own action goals through `action_feedback` and `action_result`,
sends what `outbox` holds, calls `poll` at `next_wake()` (applying the events it returns), and calls `finish()` once
when the connection ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import cbor2

from fleet_gateway.acl import AccessPolicy, Action, Principal
from fleet_gateway.conversion import ConversionError, UnknownType
from fleet_gateway.protocol.action_goals import ActionGoals, ActiveGoal
from fleet_gateway.protocol.auth import Auth
from fleet_gateway.protocol.events import CloseConnection, Event
from fleet_gateway.protocol.fields import ProtocolError, Rid, request_id, text
from fleet_gateway.protocol.fragments import Fragments
from fleet_gateway.protocol.outbox import OutFrame, SendQueue, SendQueueOverflow
from fleet_gateway.protocol.published import PublishedMessage, dumps
from fleet_gateway.protocol.served import IncomingRequest, ServedActions, ServedEndpoint, ServedServices
from fleet_gateway.protocol.service_calls import PendingCall, ServiceCalls
from fleet_gateway.protocol.state import CLOSE_TRY_AGAIN, STATUS_LEVELS, SessionLimits
from fleet_gateway.protocol.topics import Advertisement, Subscription, Topics
from fleet_gateway.ratelimit import TokenBucket

OpHandler = Callable[[dict[str, Any], Rid, list[Event]], None]


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
        self.limits = limits or SessionLimits()
        self.clock = clock
        self.outbox = SendQueue(
            max_frames=self.limits.send_queue_frames,
            max_bytes=self.limits.send_queue_bytes,
            critical_max_bytes=self.limits.critical_queue_bytes,
        )
        self.status_level = STATUS_LEVELS[self.limits.status_level]
        self.close_request: CloseConnection | None = None
        self.finished = False
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
        self._bucket = TokenBucket(self.limits.ops_per_s, self.limits.ops_burst, clock=clock)
        self._next_id = 0
        limits = self.limits
        # the capabilities, each owning its state; they see this session only as a SessionPort
        self.access = Auth(self, policy, principal, authenticate)
        self.topics = Topics(self, policy, resolve_topic_type)
        self.calls = ServiceCalls(self, resolve_service_type)
        self.services = ServedServices(
            self,
            max_served=limits.max_served_services,
            max_in_flight=limits.max_served_calls,
            timeout_s=limits.served_call_timeout_s,
        )
        self.action_goals = ActionGoals(self)
        self.actions = ServedActions(
            self,
            max_served=limits.max_served_actions,
            max_in_flight=limits.max_served_goals,
            timeout_s=limits.served_goal_timeout_s,
        )
        self.reassembly = Fragments(self)
        self._ops: dict[str, OpHandler] = {
            'advertise': self.topics.handle_advertise,
            'unadvertise': self.topics.handle_unadvertise,
            'publish': self.topics.handle_publish,
            'subscribe': self.topics.handle_subscribe,
            'unsubscribe': self.topics.handle_unsubscribe,
            'call_service': self.calls.handle_call_service,
            'advertise_service': self.services.handle_advertise,
            'unadvertise_service': self.services.handle_unadvertise,
            'service_response': self.services.handle_service_response,
            'send_action_goal': self.action_goals.handle_send_action_goal,
            'cancel_action_goal': self.action_goals.handle_cancel_action_goal,
            'advertise_action': self.actions.handle_advertise,
            'unadvertise_action': self.actions.handle_unadvertise,
            'action_feedback': self.actions.handle_action_feedback,
            'action_result': self.actions.handle_action_result,
            'fragment': self.reassembly.handle_fragment,
            'set_level': self._handle_set_level,
            'status': self._handle_status,
        }

    # --- read-only views of the capabilities' state (tests, stats, the transport) -------------------------

    @property
    def principal(self) -> Principal | None:
        return self.access.principal

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        return self.topics.subscriptions

    @property
    def advertisements(self) -> Mapping[str, Advertisement]:
        return self.topics.advertisements

    @property
    def pending_calls(self) -> Mapping[int, PendingCall]:
        return self.calls.pending

    @property
    def served(self) -> Mapping[str, ServedEndpoint]:
        """Services this client serves."""
        return self.services.served

    @property
    def incoming_calls(self) -> Mapping[str, IncomingRequest]:
        """ROS calls forwarded to this client, by call_service id; oldest (earliest deadline) first."""
        return self.services.incoming

    @property
    def served_actions(self) -> Mapping[str, ServedEndpoint]:
        return self.actions.served

    @property
    def incoming_goals(self) -> Mapping[str, IncomingRequest]:
        """ROS goals forwarded to this client, by send_action_goal id; oldest (earliest deadline) first."""
        return self.actions.incoming

    @property
    def goals(self) -> Mapping[int, ActiveGoal]:
        """Action goals this client sent whose action_result has not gone out, by goal number."""
        return self.action_goals.goals

    @property
    def goal_ids(self) -> Mapping[str | int, int]:
        return self.action_goals.goal_ids

    @property
    def fragments(self) -> Fragments:
        return self.reassembly

    @property
    def backlog_keep(self) -> int:
        """Set by the transport while this client is behind (see `Topics.backlog_keep`)."""
        return self.topics.backlog_keep

    @backlog_keep.setter
    def backlog_keep(self, value: int) -> None:
        self.topics.backlog_keep = value

    @property
    def backlog_rate(self) -> float:
        return self.topics.backlog_rate

    @backlog_rate.setter
    def backlog_rate(self, value: float) -> None:
        self.topics.backlog_rate = value

    @property
    def shed_by_topic(self) -> Mapping[str, int]:
        return self.topics.shed_by_topic

    # --- SessionPort -------------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.finished or self.close_request is not None

    def now(self) -> float:
        return self.clock()

    def allow(self, action: Action, name: str) -> None:
        self.access.allow(action, name)

    def count(self, counter: str, n: int = 1) -> None:
        self.counters[counter] += n

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, message: dict[str, Any], *, critical: bool = True) -> None:
        self.put(OutFrame(dumps(message), critical=critical))

    def put(self, frame: OutFrame, key: str | None = None, key_limit: int = 0) -> None:
        try:
            self.outbox.put(frame, key, key_limit)
        except SendQueueOverflow as exc:
            self.request_close(CLOSE_TRY_AGAIN, f'send queue overflow: {exc}')

    def send_encoded(self, message: dict[str, Any], *, fragment_size: int, encoding: str) -> None:
        if encoding == 'cbor':
            self.put(OutFrame(cbor2.dumps(message), critical=True))
            return
        data = dumps(message)
        if fragment_size and len(data) > fragment_size:
            for piece in self.fragment(data, fragment_size, critical=True):
                self.put(piece)
            return
        self.put(OutFrame(data, critical=True))

    def fragment(self, text: str, size: int, *, critical: bool) -> list[OutFrame]:
        fid = f'{self.client_id}:frag:{self.new_id()}'
        total = (len(text) + size - 1) // size
        return [
            OutFrame(
                dumps({'op': 'fragment', 'id': fid, 'data': text[i * size : (i + 1) * size], 'num': i, 'total': total}),
                critical=critical,
            )
            for i in range(total)
        ]

    def status(self, level: str, text: str, rid: Rid) -> None:
        if STATUS_LEVELS[level] < self.status_level:
            return
        message: dict[str, Any] = {'op': 'status', 'level': level, 'msg': text}
        if rid is not None:
            message['id'] = rid
        self.send(message)

    def error(self, text: str, rid: Rid) -> None:
        self.counters['errors'] += 1
        self.status('error', text, rid)

    def request_close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = CloseConnection(code, reason[:120])

    # --- input ------------------------------------------------------------------------------------------

    def receive_text(self, text: str) -> list[Event]:
        """Handle one incoming text frame; returns what the ROS side must do."""
        events: list[Event] = []
        if self.closing:
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
        if self.closing:
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
        """Route one protocol message to the capability that owns its op."""
        rid = request_id(message)
        op = message.get('op')
        if not isinstance(op, str):
            self.error('missing "op" field (a string such as "subscribe")', rid)
            return
        try:
            handler: OpHandler
            if op == 'auth':
                handler = self.access.handle_auth
            elif self.access.principal is None:
                raise ProtocolError(f'not authenticated: send {{"op": "auth", "token": ...}} before "{op}"')
            else:
                found = self._ops.get(op)
                if found is None:
                    raise ProtocolError(f'unknown op "{op[:40]}"')
                handler = found
            handler(message, rid, events)
        except (ProtocolError, ConversionError, UnknownType) as exc:
            self.error(f'{op[:40]}: {exc}', rid)

    def _handle_set_level(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        level = text(message, 'level')
        if level not in STATUS_LEVELS:
            raise ProtocolError(f'level must be one of {", ".join(STATUS_LEVELS)}, got {level[:20]!r}')
        self.status_level = STATUS_LEVELS[level]

    def _handle_status(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        """Clients may send status lines; they are accepted and ignored."""

    # --- from the ROS side ------------------------------------------------------------------------------

    def deliver(self, published: PublishedMessage, now: float) -> None:
        """A message arrived on a topic this client subscribes to."""
        self.topics.deliver(published, now)

    def deliver_batch(self, topic: str, batch: list[PublishedMessage], now: float) -> None:
        """Several messages of one topic, oldest first (see `Topics.deliver_batch`)."""
        self.topics.deliver_batch(topic, batch, now)

    def note_stale(self, topic: str, count: int, now: float) -> None:
        """`count` messages of `topic` were already past their staleness bound when they reached the fan-out."""
        self.topics.note_stale(topic, count, now)

    def note_shed(self, topic: str, count: int, now: float) -> None:
        """The gateway dropped `count` of this client's publishes to `topic` unparsed (see `Topics.note_shed`)."""
        self.topics.note_shed(topic, count, now)

    def service_result(self, call_no: int, response: Any | None, error: str | None = None) -> None:
        """The answer (or failure text) of a CallService event this session emitted."""
        self.calls.result(call_no, response, error)

    def service_request(self, service: str, token: int, request: Any) -> list[Event]:
        """A ROS caller called `service`, which this client serves: forward it as a `call_service` with a fresh id.
        Returns the events to apply now: a failed `ServiceReply` when the call cannot be forwarded."""
        return self.services.forward(service, token, request)

    def goal_request(self, action: str, token: int, goal: Any) -> list[Event]:
        """A ROS goal arrived for `action`, which this client serves: forward it as a `send_action_goal` with a
        fresh id. Returns the events to apply now: an aborting `ServedGoalResult` when it cannot be forwarded."""
        return self.actions.forward(action, token, goal)

    def goal_cancel_request(self, action: str, token: int) -> None:
        """A ROS client asked to cancel a goal this client is serving: tell it with `cancel_action_goal`."""
        self.actions.cancel_request(action, token)

    def action_feedback(self, goal_no: int, feedback: Any) -> None:
        """Feedback for a goal this client sent with `"feedback": true` (see `ActionGoals.feedback`)."""
        self.action_goals.feedback(goal_no, feedback)

    def action_result(self, goal_no: int, status: int, result: Any | None, error: str | None = None) -> None:
        """How a goal this client sent ended (see `ActionGoals.result`). Once per goal."""
        self.action_goals.result(goal_no, status, result, error)

    # --- time -------------------------------------------------------------------------------------------

    def next_wake(self) -> float | None:
        """When `poll` must run next (throttled subscriptions, fragment timeouts, ...), or None."""
        wakes = (
            self.topics.next_wake(),
            self.reassembly.next_wake(),
            self.services.next_wake(),
            self.actions.next_wake(),
            self.access.next_wake(),
        )
        deadlines = [d for d in wakes if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> list[Event]:
        """Time-driven work: throttled deliveries, fragment and served-request timeouts. Returns events to apply."""
        events: list[Event] = []
        self.access.poll(now)
        self.services.poll(now, events)
        self.actions.poll(now, events)
        self.reassembly.poll(now)
        self.topics.poll_throttled(now)
        self.topics.poll_reports(now)
        return events

    # --- end --------------------------------------------------------------------------------------------

    def finish(self) -> list[Event]:
        """Release everything this client holds; returns the ROS-side clean-up. Idempotent."""
        if self.finished:
            return []
        self.finished = True
        events = self.topics.finish()
        events.extend(self.services.finish())  # fails their waiting ROS calls
        events.extend(self.actions.finish())  # aborts their ROS goals
        events.extend(self.action_goals.finish())
        events.extend(self.calls.finish())
        events.extend(self.reassembly.finish())
        self.outbox.clear()
        return events

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            'dropped': self.outbox.dropped_total,
            'stale_dropped': self.outbox.stale_total,
            'drops_by_topic': {str(k): v for k, v in self.outbox.drops.items()},
            'shed_by_topic': dict(self.topics.shed_by_topic),
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

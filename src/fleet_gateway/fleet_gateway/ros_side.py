"""The rclpy side of the gateway: one node whose publishers, subscriptions, service and action clients are shared
by all clients (reference-counted per topic). Subscription callbacks run in the spin thread; they convert each
message to JSON once and hand it to the asyncio loop in batches with one `call_soon_threadsafe` per batch.

Services served by WebSocket clients (advertise_service) answer later, from the asyncio thread. rclpy's
EventsExecutor calls a service callback with (request, response) only and sends whatever it returns with
`service.send_response(returned, header)`; it does not await coroutine callbacks (it tries to send the
coroutine object, raises TypeError and ends the spin). So the callback returns a `_Deferred` marker and the
service's `send_response` is wrapped: for a marker it keeps the request header and hands (request, header) to
the loop; the real reply is sent later with `Service.send_response(response, header)` from the asyncio thread."""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rclpy.service import Service

from fleet_gateway.acl import AccessPolicy, compile_glob
from fleet_gateway.config import GatewayConfig
from fleet_gateway.conversion import codec_for, type_name
from fleet_gateway.protocol.published import PublishedMessage
from fleet_ros import qos as fleet_qos

log = logging.getLogger('fleet_gateway.ros')


class EndpointConflict(ValueError):
    """A topic is already bridged with another message type, or a service or action is served by someone else."""


def served_already(
    name: str, current: tuple[Any, type] | None, owner: Any, cls: type, ros_serves: Callable[[], bool]
) -> bool:
    """Whether `owner` already serves `name` with `cls` (`current`: the (owner, type) serving it through the gateway,
    if any). Raises EndpointConflict when another client, or a ROS node (`ros_serves`), serves it."""
    if current is not None:
        if current[0] is owner and current[1] is cls:
            return True
        raise EndpointConflict(f'{name} is already served through the gateway by another client')
    if ros_serves():
        raise EndpointConflict(f'{name} is already served by a ROS node')
    return False


@dataclass
class _TopicOut:
    msg_cls: type
    publisher: Any
    users: int = 0


MAX_RETAINED = 100
BEST_EFFORT_READER_DEPTH = 1000
"""History depth of the gateway's best-effort subscriptions, at least (a local resource: compatibility is unchanged).
Measured here: an rclpy EventsExecutor reader of depth 5 (the `telemetry` profile) fed ~20k msg/s took ~2k msg/s,
the rest overwritten before it was taken; depth 1000 took ~15k msg/s. Freshness is bounded by `max_staleness_ms`."""
"""Samples kept per transient-local subscription for late subscribers (at most its depth, at most this)."""


@dataclass
class _TopicIn:
    msg_cls: type
    subscription: Any
    users: set[Any] = field(default_factory=set)
    retained: deque[PublishedMessage] | None = None
    """The last samples of a transient-local subscription, replayed to every client that subscribes later (the
    shared ROS subscription got them from DDS once, when it was created)."""
    warning: str | None = None
    """Why some publishers of this topic cannot reach the subscription (its configured QoS cannot match them)."""


class _Deferred:
    """Returned by a served service's callback instead of a response: the answer comes later."""

    __slots__ = ('request',)

    def __init__(self, request: Any) -> None:
        self.request = request


@dataclass
class _Served:
    """A ROS service served by one WebSocket client; `waiting` maps gateway tokens to request headers."""

    service: str
    srv_cls: type
    owner: Any
    server: Any = None
    waiting: dict[int, Any] = field(default_factory=dict)
    closed: bool = False


OnMessages = Callable[[list[PublishedMessage]], None]
"""Called in the asyncio thread with each batch of messages from ROS topics that clients subscribed to."""
EndpointsFactory = Callable[[asyncio.AbstractEventLoop, OnMessages], 'RosEndpoints']
"""Builds the ROS side of a gateway on its event loop (a fake one in protocol tests)."""
OnServiceRequest = Callable[[Any, str, int, Any], None]
"""(owner, service, token, request), called in the asyncio thread for each ROS call to a client-served service."""


def failed_response(srv_cls: type, why: str) -> Any:
    """What a ROS caller gets when the serving client fails, times out or goes away: a default response, with
    the reason in a `message` string field when the type has one (std_srvs/Trigger, SetBool, ...)."""
    response = srv_cls.Response()  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    if response.get_fields_and_field_types().get('message') == 'string':
        response.message = why[:500]
    return response


class SerializedActionClient(ActionClient):
    """An rclpy ActionClient whose requests are sent from one thread (asyncio) while the spin thread handles the
    responses. rclpy 7.1's ActionClient has no lock: it sends a request, then registers the future for its
    response, and the spin thread drops a response that comes in between as unexpected (the goal, cancel or result
    would never be answered). Sending and handling are serialised here, as rclpy's service Client does with its own
    lock. Reentrant: a future's done callback may send a cancel from inside `execute`."""

    # The base calls name ActionClient, not super(): mypy's untyped_calls_exclude does not see through super().

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ActionClient.__init__(self, *args, **kwargs)
        self._send_lock = threading.RLock()

    if TYPE_CHECKING:

        def server_is_ready(self) -> bool: ...

    def send_goal_async(self, goal: Any, feedback_callback: Any = None, goal_uuid: Any = None) -> Any:
        with self._send_lock:
            return ActionClient.send_goal_async(self, goal, feedback_callback=feedback_callback, goal_uuid=goal_uuid)

    def _cancel_goal_async(self, goal_handle: Any) -> Any:
        with self._send_lock:
            return ActionClient._cancel_goal_async(self, goal_handle)

    def _get_result_async(self, goal_handle: Any) -> Any:
        with self._send_lock:
            return ActionClient._get_result_async(self, goal_handle)

    async def execute(self, taken_data: Any) -> None:
        # The base coroutine never suspends here: its only await runs the (plain function) feedback callback.
        with self._send_lock:
            await ActionClient.execute(self, taken_data)


class RosEndpoints:
    """Owned by the asyncio thread except for the subscription callbacks, which only touch `_inbox`."""

    def __init__(
        self,
        node: Node,
        loop: asyncio.AbstractEventLoop,
        config: GatewayConfig,
        policy: AccessPolicy,
        on_messages: OnMessages,
    ) -> None:
        self.node = node
        self.loop = loop
        self.policy = policy
        self.on_messages = on_messages
        self._qos_rules = [(compile_glob(rule.glob), fleet_qos.PROFILES[rule.profile]) for rule in config.topic_qos]
        self._default_qos = fleet_qos.PROFILES[config.default_qos]
        self._staleness = [(compile_glob(rule.glob), rule.max_ms) for rule in config.staleness]
        self._max_staleness_ms = config.max_staleness_ms
        self._out: dict[str, _TopicOut] = {}
        self._in: dict[str, _TopicIn] = {}
        self._clients: dict[tuple[str, type], Any] = {}
        self._action_clients: dict[tuple[str, type], SerializedActionClient] = {}
        self._inbox: deque[PublishedMessage] = deque()
        self._inbox_lock = threading.Lock()
        self._drain_scheduled = False
        self.received = 0
        self._served: dict[str, _Served] = {}
        self._tokens = itertools.count(1)
        self.on_service_request: OnServiceRequest | None = None
        self.served_calls = {'forwarded': 0, 'answered': 0, 'failed': 0}

    def qos_for(self, topic: str) -> QoSProfile:
        return self.rule_for(topic) or self._default_qos

    def max_age_s(self, topic: str, profile: QoSProfile) -> float | None:
        """How old a frame of `topic` may get before it is dropped instead of sent (None: never stale): the first
        matching `staleness` rule, else `max_staleness_ms` for a best-effort subscription. Critical topics never."""
        if self.policy.is_critical(topic):
            return None
        for pattern, max_ms in self._staleness:
            if pattern.match(topic):
                return max_ms / 1000.0 if max_ms > 0 else None
        if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL:
            return None  # a latched sample is the last state: meant to reach late subscribers, however old
        if profile.reliability == ReliabilityPolicy.BEST_EFFORT and self._max_staleness_ms > 0:
            return self._max_staleness_ms / 1000.0
        return None

    def rule_for(self, topic: str) -> QoSProfile | None:
        """The profile a `topic_qos` rule names for `topic`, or None when no rule applies."""
        for pattern, profile in self._qos_rules:
            if pattern.match(topic):
                return profile
        return None

    def subscription_qos(self, topic: str) -> tuple[QoSProfile, str | None]:
        """The QoS of a new shared subscription and, when some publishers cannot match it, why.

        With a `topic_qos` rule: that profile, and a warning naming the publishers it cannot match (a reliable
        subscription never hears a best-effort publisher; a transient-local one never a volatile publisher). Without
        one: the default profile adapted to the publishers present now, as rosbridge does: best effort when any
        offers only best effort, transient-local when every one offers it (rosbridge takes it when any does, which
        cuts the volatile publishers off; here they stay connected)."""
        offered = [info.qos_profile for info in self.node.get_publishers_info_by_topic(topic)]
        rule = self.rule_for(topic)
        if rule is None:
            profile = copy.copy(self._default_qos)
            if offered:
                best_effort = any(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in offered)
                latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
                profile.reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
                profile.durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
            return profile, None
        problems = []
        if rule.reliability == ReliabilityPolicy.RELIABLE:
            n = sum(q.reliability == ReliabilityPolicy.BEST_EFFORT for q in offered)
            if n:
                problems.append(f'{n} best-effort publisher(s) cannot reach its reliable subscription')
        if rule.durability == DurabilityPolicy.TRANSIENT_LOCAL:
            n = sum(q.durability == DurabilityPolicy.VOLATILE for q in offered)
            if n:
                problems.append(f'{n} volatile publisher(s) cannot reach its transient-local subscription')
        if not problems:
            return rule, None
        why = f'{topic}: the gateway subscribes with its configured QoS and ' + '; '.join(problems)
        return rule, why + ' (their messages will not arrive; see topic_qos in the gateway config)'

    # --- publishers ------------------------------------------------------------------------------------

    def advertise(self, topic: str, msg_cls: type, latch: bool = False) -> None:
        """Publish `topic` for a client; `latch` (rosbridge's advertise option) makes the publisher transient-local,
        so late subscribers get its last message. A topic already bridged keeps the publisher it has."""
        out = self._out.get(topic)
        if out is None:
            self._check_type(topic, msg_cls)
            profile = self.qos_for(topic)
            if latch and profile.durability != DurabilityPolicy.TRANSIENT_LOCAL:
                profile = copy.copy(profile)
                profile.durability = DurabilityPolicy.TRANSIENT_LOCAL
            out = self._out[topic] = _TopicOut(msg_cls, self.node.create_publisher(msg_cls, topic, profile))
        elif out.msg_cls is not msg_cls:
            raise EndpointConflict(f'{topic} is bridged as {type_name(out.msg_cls)}, not {type_name(msg_cls)}')
        out.users += 1

    def unadvertise(self, topic: str) -> None:
        out = self._out.get(topic)
        if out is None:
            return
        out.users -= 1
        if out.users <= 0:
            del self._out[topic]
            self.node.destroy_publisher(out.publisher)

    def publish(self, topic: str, msg: Any) -> None:
        out = self._out.get(topic)
        if out is not None:
            out.publisher.publish(msg)

    # --- subscriptions ---------------------------------------------------------------------------------

    def subscribe(self, topic: str, msg_cls: type, user: Any) -> tuple[list[PublishedMessage], str | None]:
        """Add `user` to the shared subscription of `topic` (created on first use). Returns what to replay to it at
        once (the retained samples of a transient-local subscription that already existed) and, when some of the
        topic's publishers cannot match the subscription's QoS, a warning for the client."""
        entry = self._in.get(topic)
        replay: list[PublishedMessage] = []
        if entry is None:
            self._check_type(topic, msg_cls)
            critical = self.policy.is_critical(topic)
            codec = codec_for(msg_cls)
            profile, warning = self.subscription_qos(topic)
            max_age = self.max_age_s(topic, profile)
            if profile.reliability == ReliabilityPolicy.BEST_EFFORT and profile.depth < BEST_EFFORT_READER_DEPTH:
                profile = copy.copy(profile)
                profile.depth = BEST_EFFORT_READER_DEPTH

            def callback(msg: Any, topic: str = topic) -> None:
                raw = functools.partial(serialize_message, msg)
                payload = codec.to_json(msg)
                self._from_ros(PublishedMessage(topic, payload, critical=critical, raw=raw, max_age_s=max_age))

            if warning is not None:
                log.warning('%s', warning)
            sub = self.node.create_subscription(msg_cls, topic, callback, profile)
            entry = self._in[topic] = _TopicIn(msg_cls, sub, warning=warning)
            if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL:
                entry.retained = deque(maxlen=max(1, min(MAX_RETAINED, profile.depth)))
        elif entry.msg_cls is not msg_cls:
            raise EndpointConflict(f'{topic} is bridged as {type_name(entry.msg_cls)}, not {type_name(msg_cls)}')
        elif entry.retained and user not in entry.users:
            replay = list(entry.retained)
        entry.users.add(user)
        return replay, entry.warning

    def unsubscribe(self, topic: str, user: Any) -> None:
        entry = self._in.get(topic)
        if entry is None:
            return
        entry.users.discard(user)
        if not entry.users:
            del self._in[topic]
            self.node.destroy_subscription(entry.subscription)

    def subscribers(self, topic: str) -> set[Any]:
        entry = self._in.get(topic)
        return entry.users if entry is not None else set()

    def _from_ros(self, published: PublishedMessage) -> None:
        """Spin thread: queue the message; wake the loop once per batch, not once per message."""
        with self._inbox_lock:
            self._inbox.append(published)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop closed during shutdown; the message has nobody left to go to
            log.debug('dropping a message on %s: the event loop is closed', published.topic)

    def _drain(self) -> None:
        with self._inbox_lock:
            batch = list(self._inbox)
            self._inbox.clear()
            self._drain_scheduled = False
        self.received += len(batch)
        for published in batch:
            entry = self._in.get(published.topic)
            if entry is not None and entry.retained is not None:
                entry.retained.append(published)
        self.on_messages(batch)

    # --- services --------------------------------------------------------------------------------------

    def client(self, service: str, srv_cls: type) -> Any:
        key = (service, srv_cls)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self.node.create_client(srv_cls, service, qos_profile=fleet_qos.SERVICE_CALLS)
        return client

    def action_client(self, action: str, action_cls: type) -> SerializedActionClient:
        """The node's client of `action`, shared by every WebSocket client that sends goals to it."""
        key = (action, action_cls)
        client = self._action_clients.get(key)
        if client is None:
            calls = fleet_qos.SERVICE_CALLS  # goal, cancel and result requests: deep queues, like service calls
            client = self._action_clients[key] = SerializedActionClient(
                self.node,
                action_cls,
                action,
                goal_service_qos_profile=calls,
                result_service_qos_profile=calls,
                cancel_service_qos_profile=calls,
            )
        return client

    # --- services served by WebSocket clients ---------------------------------------------------------

    def advertise_service(self, service: str, srv_cls: type, owner: Any) -> None:
        """Serve `service` in ROS for `owner`; requests go to `on_service_request` in the asyncio thread."""
        current = self._served.get(service)
        mine = (current.owner, current.srv_cls) if current is not None else None
        if served_already(service, mine, owner, srv_cls, lambda: self.node.count_services(service) > 0):
            return
        served = _Served(service, srv_cls, owner)
        loop = self.loop

        def callback(request: Any, _response: Any) -> _Deferred:  # spin thread
            return _Deferred(request)

        server = self.node.create_service(srv_cls, service, callback, qos_profile=fleet_qos.SERVICE_CALLS)

        def send_response(response: Any, header: Any) -> None:  # spin thread, right after `callback`
            if not isinstance(response, _Deferred):
                Service.send_response(server, response, header)
                return
            try:
                loop.call_soon_threadsafe(self._service_request, served, response.request, header)
            except RuntimeError:  # the loop closed during shutdown: nobody is left to answer
                log.debug('dropping a call to %s: the event loop is closed', service)

        # Never raise from here: an exception escaping a callback ends the EventsExecutor's spin.
        server.send_response = send_response  # type: ignore[method-assign]  # this one service answers deferred calls itself
        served.server = server
        self._served[service] = served

    def _service_request(self, served: _Served, request: Any, header: Any) -> None:
        """Asyncio thread: a ROS call arrived for a client-served service."""
        if served.closed:
            self._send(served, failed_response(served.srv_cls, f'{served.service} is no longer served'), header)
            return
        token = next(self._tokens)
        served.waiting[token] = header
        self.served_calls['forwarded'] += 1
        if self.on_service_request is None:
            self.reply(served.service, token, None, 'the gateway is shutting down')
            return
        self.on_service_request(served.owner, served.service, token, request)

    def reply(self, service: str, token: int, response: Any | None, error: str | None = None) -> None:
        """Answer one forwarded call (a failed one when `response` is None); unknown tokens are ignored."""
        served = self._served.get(service)
        header = served.waiting.pop(token, None) if served is not None else None
        if served is None or header is None:
            return
        if response is None:
            self.served_calls['failed'] += 1
            response = failed_response(served.srv_cls, error or f'{service} failed')
        else:
            self.served_calls['answered'] += 1
        self._send(served, response, header)

    def _send(self, served: _Served, response: Any, header: Any) -> None:
        try:
            Service.send_response(served.server, response, header)
        except Exception:  # a destroyed service or a caller gone: nothing else can be done for this call
            log.warning('could not answer a call to %s', served.service, exc_info=True)

    def unadvertise_service(self, service: str, owner: Any, why: str = 'the serving client unadvertised it') -> None:
        """Stop serving `service`: every call still waiting gets a failed response now, then the service goes."""
        served = self._served.get(service)
        if served is None or served.owner is not owner:
            return
        del self._served[service]
        served.closed = True
        for header in served.waiting.values():
            self.served_calls['failed'] += 1
            self._send(served, failed_response(served.srv_cls, f'{service}: {why}'), header)
        served.waiting.clear()
        self.node.destroy_service(served.server)

    def served_services(self) -> dict[str, Any]:
        return {name: served.owner for name, served in self._served.items()}

    def _check_type(self, topic: str, msg_cls: type) -> None:
        wanted = type_name(msg_cls)
        for name, types in self.node.get_topic_names_and_types():
            if name == topic and types and wanted not in types:
                raise EndpointConflict(f'{topic} exists in ROS with type {types[0]}, not {wanted}')

    def topic_type(self, topic: str) -> str | None:
        for name, types in self.node.get_topic_names_and_types():
            if name == topic and types:
                return str(types[0])
        return None

    def service_type(self, service: str) -> str | None:
        for name, types in self.node.get_service_names_and_types():
            if name == service and types:
                return str(types[0])
        return None

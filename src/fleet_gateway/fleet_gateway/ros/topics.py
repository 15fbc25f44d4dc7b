"""The gateway's ROS topics: one node's publishers and subscriptions, shared by all clients (reference-counted per
topic), with the QoS each gets. Subscription callbacks run in the spin thread; they convert each message to JSON
once and hand it to the asyncio loop in batches with one `call_soon_threadsafe` per batch."""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message

from fleet_gateway.acl import AccessPolicy, compile_glob
from fleet_gateway.config import GatewayConfig
from fleet_gateway.conversion import codec_for, type_name
from fleet_gateway.protocol.published import PublishedMessage
from fleet_gateway.ros.graph import EndpointConflict, check_type
from fleet_ros import qos as fleet_qos

log = logging.getLogger('fleet_gateway.ros')


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


OnMessages = Callable[[list[PublishedMessage]], None]
"""Called in the asyncio thread with each batch of messages from ROS topics that clients subscribed to."""


class RosTopics:
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
        self._inbox: deque[PublishedMessage] = deque()
        self._inbox_lock = threading.Lock()
        self._drain_scheduled = False
        self.received = 0
        self._sheddable: dict[str, bool] = {}

    def qos_for(self, topic: str) -> QoSProfile:
        return self.rule_for(topic) or self._default_qos

    def sheddable(self, topic: str) -> bool:
        """Publishes to `topic` may be shed (dropped unparsed when over capacity): best effort on the ROS side
        and not a critical (command/safety) topic."""
        known = self._sheddable.get(topic)
        if known is None:
            known = self._sheddable[topic] = self.qos_for(
                topic
            ).reliability == ReliabilityPolicy.BEST_EFFORT and not self.policy.is_critical(topic)
        return known

    def max_age_s(self, topic: str, profile: QoSProfile) -> float | None:
        """How old a frame of `topic` may get before it is dropped instead of sent, which also classes the topic:
        None for one whose every message must arrive (critical, or reliable as subscribed: never dropped, the client
        is closed when it cannot take them); seconds (`math.inf`: no bound) for telemetry, which may be dropped. A
        best-effort subscription is telemetry, bounded by the first matching `staleness` rule or `max_staleness_ms`;
        a reliable one only when a `staleness` rule with `max_ms` > 0 names it. Latched (transient-local) samples
        are the last state, meant to reach late subscribers however old: never stale."""
        if self.policy.is_critical(topic):
            return None
        best_effort = profile.reliability == ReliabilityPolicy.BEST_EFFORT
        unbounded = math.inf if best_effort else None
        for pattern, max_ms in self._staleness:
            if pattern.match(topic):
                return max_ms / 1000.0 if max_ms > 0 else unbounded
        if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL or self._max_staleness_ms <= 0:
            return unbounded
        return self._max_staleness_ms / 1000.0 if best_effort else None

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
            check_type(self.node, topic, msg_cls)
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
            check_type(self.node, topic, msg_cls)
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

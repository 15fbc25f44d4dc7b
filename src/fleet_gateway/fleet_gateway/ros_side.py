"""The rclpy side of the gateway: one node whose publishers, subscriptions and service clients are shared by
all clients (reference-counted per topic). Subscription callbacks run in the spin thread; they convert each
message to JSON once and hand it to the asyncio loop in batches with one `call_soon_threadsafe` per batch."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile

from fleet_gateway.acl import AccessPolicy, compile_glob
from fleet_gateway.config import GatewayConfig
from fleet_gateway.conversion import codec_for, type_name
from fleet_gateway.protocol.published import PublishedMessage
from fleet_ros import qos as fleet_qos

log = logging.getLogger('fleet_gateway.ros')


class EndpointConflict(ValueError):
    """A topic is already bridged with another message type."""


@dataclass
class _TopicOut:
    msg_cls: type
    publisher: Any
    users: int = 0


@dataclass
class _TopicIn:
    msg_cls: type
    subscription: Any
    users: set[Any] = field(default_factory=set)


class RosEndpoints:
    """Owned by the asyncio thread except for the subscription callbacks, which only touch `_inbox`."""

    def __init__(
        self,
        node: Node,
        loop: asyncio.AbstractEventLoop,
        config: GatewayConfig,
        policy: AccessPolicy,
        on_messages: Callable[[list[PublishedMessage]], None],
    ) -> None:
        self.node = node
        self.loop = loop
        self.policy = policy
        self.on_messages = on_messages
        self._qos_rules = [(compile_glob(rule.glob), fleet_qos.PROFILES[rule.profile]) for rule in config.topic_qos]
        self._default_qos = fleet_qos.PROFILES[config.default_qos]
        self._out: dict[str, _TopicOut] = {}
        self._in: dict[str, _TopicIn] = {}
        self._clients: dict[tuple[str, type], Any] = {}
        self._inbox: deque[PublishedMessage] = deque()
        self._inbox_lock = threading.Lock()
        self._drain_scheduled = False
        self.received = 0

    def qos_for(self, topic: str) -> QoSProfile:
        for pattern, profile in self._qos_rules:
            if pattern.match(topic):
                return profile
        return self._default_qos

    # --- publishers ------------------------------------------------------------------------------------

    def advertise(self, topic: str, msg_cls: type) -> None:
        out = self._out.get(topic)
        if out is None:
            self._check_type(topic, msg_cls)
            out = self._out[topic] = _TopicOut(msg_cls, self.node.create_publisher(msg_cls, topic, self.qos_for(topic)))
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

    def subscribe(self, topic: str, msg_cls: type, user: Any) -> None:
        entry = self._in.get(topic)
        if entry is None:
            self._check_type(topic, msg_cls)
            critical = self.policy.is_critical(topic)
            codec = codec_for(msg_cls)

            def callback(msg: Any, topic: str = topic) -> None:
                self._from_ros(PublishedMessage(topic, codec.to_json(msg), critical=critical))

            sub = self.node.create_subscription(msg_cls, topic, callback, self.qos_for(topic))
            entry = self._in[topic] = _TopicIn(msg_cls, sub)
        elif entry.msg_cls is not msg_cls:
            raise EndpointConflict(f'{topic} is bridged as {type_name(entry.msg_cls)}, not {type_name(msg_cls)}')
        entry.users.add(user)

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
        self.on_messages(batch)

    # --- services --------------------------------------------------------------------------------------

    def client(self, service: str, srv_cls: type) -> Any:
        key = (service, srv_cls)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self.node.create_client(srv_cls, service, qos_profile=fleet_qos.SERVICE_CALLS)
        return client

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

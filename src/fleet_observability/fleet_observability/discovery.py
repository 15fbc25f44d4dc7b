"""Finding fleet topics and services in the ROS graph and subscribing to them without deserialising.

Shared by the Foxglove server and the MCAP recorder: both want every topic matching some globs, as raw CDR
bytes, with a QoS compatible with whoever publishes it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription

from fleet_core import topics
from fleet_observability.ros2msg import FEEDBACK_MESSAGE, SchemaNotFound, action_derived, split_type
from fleet_observability.topic_match import TopicSelector
from fleet_ros import qos


class InterfaceImportError(LookupError):
    """A message or service type whose Python module is not importable (package not built or not sourced)."""


def import_interface(type_name: str, kind: str = 'msg') -> Any:
    """The generated Python class of 'pkg/msg/Type' (or 'pkg/srv/Type'). Raises InterfaceImportError."""
    try:
        package, found_kind, name = split_type(type_name, default_kind=kind)
    except SchemaNotFound as exc:
        raise InterfaceImportError(str(exc)) from None
    try:
        module = importlib.import_module(f'{package}.{found_kind}')
        if found_kind == 'action' and not hasattr(module, name):
            return _action_message(module, name)
        return getattr(module, name)
    except (ImportError, AttributeError):
        raise InterfaceImportError(
            f'cannot import {package}.{found_kind}.{name}: is {package} built and install/setup.bash sourced?'
        ) from None


def _action_message(module: Any, name: str) -> Any:
    """Messages an action derives are not exported by rosidl's package module (e.g. RunMission_FeedbackMessage):
    they hang off the action class (RunMission.Impl.FeedbackMessage, RunMission.Feedback)."""
    derived = action_derived(name)
    if derived is None:
        raise AttributeError(name)
    action = getattr(module, derived[0])
    return action.Impl.FeedbackMessage if derived[1] == FEEDBACK_MESSAGE else getattr(action, derived[1][1:])


def qos_for_publishers(node: Node, topic: str) -> QoSProfile | None:
    """A named fleet QoS profile that matches every current publisher of `topic`; None when there are none.

    Best-effort publishers need a best-effort reader; transient-local is requested only when every publisher
    offers it (a transient-local reader is incompatible with a volatile writer).
    """
    infos = node.get_publishers_info_by_topic(topic)
    if not infos:
        return None
    if any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
        return qos.TELEMETRY
    if all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos):
        return qos.OPERATIONS if topic.rpartition('/')[2] == topics.OPERATIONS else qos.LATCHED
    return qos.ACK


@dataclass(frozen=True, slots=True)
class DiscoveredTopic:
    name: str
    type_name: str
    """'pkg/msg/Type'."""


RawCallback = Callable[[DiscoveredTopic, bytes], None]


class RawTopicFollower:
    """Polls the graph (call `poll()` from a node timer) and raw-subscribes to each new matching topic.

    `on_new(topic) -> bool` is asked first (it registers a channel, say) and may refuse the topic; every
    received message then goes to `on_message(topic, cdr_bytes)` on the executor thread. With `eager=False` a
    discovered topic is only subscribed once `follow(name)` is called (and released by `unfollow(name)`), so a
    server nobody watches costs its publishers nothing. Call follow/unfollow on the executor thread.
    """

    def __init__(
        self,
        node: Node,
        selector: TopicSelector,
        on_message: RawCallback,
        on_new: Callable[[DiscoveredTopic], bool] | None = None,
        *,
        eager: bool = True,
    ) -> None:
        self._node = node
        self._selector = selector
        self._on_message = on_message
        self._on_new = on_new
        self._eager = eager
        self._subs: dict[str, Subscription] = {}
        self._how: dict[str, tuple[Any, QoSProfile]] = {}
        self._refused: set[str] = set()
        self.topics: dict[str, DiscoveredTopic] = {}

    @property
    def following(self) -> frozenset[str]:
        """Topics with a live ROS subscription."""
        return frozenset(self._subs)

    def poll(self) -> list[DiscoveredTopic]:
        """Register (and, when eager, subscribe to) matching topics seen for the first time; returns them."""
        added: list[DiscoveredTopic] = []
        for name, types in self._node.get_topic_names_and_types():
            if name in self.topics or name in self._refused or not self._selector.matches(name):
                continue
            if len(types) != 1:
                self._node.get_logger().warning(f'topic {name} has several types {types}: not followed')
                self._refused.add(name)
                continue
            profile = qos_for_publishers(self._node, name)
            if profile is None:
                continue  # no publisher yet: its QoS is unknown, look again next poll
            topic = DiscoveredTopic(name=name, type_name=types[0])
            try:
                msg_class = import_interface(topic.type_name)
            except InterfaceImportError as exc:
                self._node.get_logger().warning(f'topic {name}: {exc}; not followed')
                self._refused.add(name)
                continue
            if self._on_new is not None and not self._on_new(topic):
                self._refused.add(name)
                continue
            self._how[name] = (msg_class, profile)
            self.topics[name] = topic
            added.append(topic)
            if self._eager:
                self.follow(name)
        return added

    def follow(self, name: str) -> bool:
        """Subscribe to a discovered topic (no-op when already subscribed); False for an unknown topic."""
        if name in self._subs:
            return True
        if name not in self._how:
            return False
        msg_class, profile = self._how[name]
        topic = self.topics[name]
        self._subs[name] = self._node.create_subscription(msg_class, name, self._callback_for(topic), profile, raw=True)
        self._node.get_logger().info(f'following {name} [{topic.type_name}]')
        return True

    def unfollow(self, name: str) -> None:
        sub = self._subs.pop(name, None)
        if sub is not None:
            self._node.destroy_subscription(sub)
            self._node.get_logger().info(f'no longer following {name}')

    def _callback_for(self, topic: DiscoveredTopic) -> Callable[[bytes], None]:
        on_message = self._on_message

        def callback(data: bytes) -> None:
            on_message(topic, data)

        return callback

    def close(self) -> None:
        for sub in self._subs.values():
            self._node.destroy_subscription(sub)
        self._subs.clear()

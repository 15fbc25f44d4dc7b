"""The fleet's Foxglove WebSocket server (foxglove-sdk): fleet topics as CDR passthrough with ros2msg schemas,
operator services forwarded to the orchestrators, and a read-only parameter view.

Threads: the SDK runs its own server threads and calls listeners and service handlers on them; rclpy spins an
EventsExecutor in a SpinThread. Raw subscription callbacks (executor thread) log bytes straight into SDK
channels; service handlers (SDK threads) wait on rclpy futures that the executor completes.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import foxglove
import rclpy
import yaml
from foxglove import Channel, Context, MessageSchema, Parameter, Schema, Service, ServiceRequest, ServiceSchema
from foxglove.websocket import Capability, ChannelView, Client, StatusLevel, WebSocketServer
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from fleet_observability.discovery import DiscoveredTopic, InterfaceImportError, RawTopicFollower, import_interface
from fleet_observability.foxglove_services import (
    LOGIN_SERVICE,
    AccessConfigError,
    AccessPolicy,
    ClientRoles,
    LoginHandler,
    RosServiceForwarder,
    parse_tokens,
)
from fleet_observability.ros2msg import SchemaLibrary, SchemaNotFound, schema_name
from fleet_observability.topic_match import DEFAULT_TOPIC_GLOBS, TopicSelector
from fleet_ros.spin import SpinThread

DEFAULT_SERVICE_GLOBS: tuple[str, ...] = ('/fleet/*/*/submit', '/fleet/*/*/set_estop', '/fleet/*/*/operation')
EXIT_USAGE = 2
WATCH_PERIOD_SEC = 0.05


@dataclass(frozen=True)
class FoxgloveSettings:
    """How the server binds and what it exposes."""

    host: str = '127.0.0.1'
    port: int = 8765
    name: str = 'fleetlanes'
    topics: tuple[str, ...] = DEFAULT_TOPIC_GLOBS
    services: tuple[str, ...] = DEFAULT_SERVICE_GLOBS
    discovery_period_sec: float = 0.5
    service_timeout_sec: float = 5.0
    message_backlog: int = 1024
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Read-only values shown in Foxglove's Parameters panel (e.g. the fleet layout)."""


class _Listener:
    """SDK listener: parameters are a read-only view; subscriptions are logged with the client id."""

    def __init__(self, bridge: FleetFoxgloveBridge) -> None:
        self._bridge = bridge

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        self._bridge.log.debug(f'client {client.id} subscribed to {channel.topic}')
        self._bridge.watchers_changed(channel.topic, +1)

    def on_unsubscribe(self, client: Client, channel: ChannelView) -> None:
        self._bridge.log.debug(f'client {client.id} unsubscribed from {channel.topic}')
        self._bridge.watchers_changed(channel.topic, -1)

    def on_get_parameters(self, client: Client, param_names: list[str], request_id: str | None = None) -> list[Any]:
        return self._bridge.parameter_values(param_names)

    def on_set_parameters(self, client: Client, parameters: list[Any], request_id: str | None = None) -> list[Any]:
        names = [p.name for p in parameters]
        self._bridge.log.warning(f'client {client.id} tried to set parameters {names}: they are read-only')
        self._bridge.publish_status(f'parameters are read-only here; {", ".join(names)} unchanged', warning=True)
        return self._bridge.parameter_values(names)


class FleetFoxgloveBridge:
    """Wires one rclpy node to one foxglove-sdk WebSocket server. `start()`, then `close()`."""

    def __init__(
        self,
        node: Node,
        settings: FoxgloveSettings,
        policy: AccessPolicy | None = None,
        *,
        schemas: SchemaLibrary | None = None,
    ) -> None:
        self.node = node
        self.log = node.get_logger()
        self.settings = settings
        self.policy = policy or AccessPolicy()
        self.policy.check_bind(settings.host)
        self._schemas = schemas or SchemaLibrary()
        self._context = Context()
        self._channels: dict[str, Channel] = {}
        self._roles = ClientRoles(self.policy)
        self._login = LoginHandler(self._roles)
        self._forwarders: dict[str, RosServiceForwarder] = {}
        self._refused_services: set[str] = set()
        self._service_selector = TopicSelector(include=settings.services)
        # Lazy: a ROS topic is subscribed only while some client watches its channel.
        self._follower = RawTopicFollower(
            node, TopicSelector(include=settings.topics), self._on_message, on_new=self._on_new_topic, eager=False
        )
        self._server: WebSocketServer | None = None
        self._timer = None
        self._lock = threading.Lock()
        self._watchers: dict[str, int] = {}
        self._watchers_dirty = False
        # Client (un)subscriptions arrive on the SDK's thread; ROS subscriptions change on the executor's, within
        # one WATCH_PERIOD_SEC (the EventsExecutor has no guard conditions to wake it sooner).
        self._watch_timer = node.create_timer(WATCH_PERIOD_SEC, self._apply_watchers_if_changed)

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self) -> int:
        """Start serving; returns the bound port (settings.port 0 picks a free one)."""
        login = Service(
            LOGIN_SERVICE,
            schema=ServiceSchema(
                'fleet_observability/Login',
                request=MessageSchema(
                    encoding='json',
                    schema=Schema(name='LoginRequest', encoding='jsonschema', data=LoginHandler.REQUEST_SCHEMA),
                ),
                response=MessageSchema(
                    encoding='json',
                    schema=Schema(name='LoginResponse', encoding='jsonschema', data=LoginHandler.RESPONSE_SCHEMA),
                ),
            ),
            handler=lambda request: self._login.handle(request.client_id, request.payload),
        )
        self._server = foxglove.start_server(
            name=self.settings.name,
            host=self.settings.host,
            port=self.settings.port,
            capabilities=[Capability.Services, Capability.Parameters],
            supported_encodings=['cdr', 'json'],
            services=[login],
            server_listener=_Listener(self),
            context=self._context,
            message_backlog_size=self.settings.message_backlog,
        )
        self.discover()
        self._timer = self.node.create_timer(self.settings.discovery_period_sec, self.discover)
        self.log.info(
            f'foxglove server on ws://{self.settings.host}:{self._server.port} (tokens: {not self.policy.open})'
        )
        return self._server.port

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError('FleetFoxgloveBridge.start() has not been called')
        return self._server.port

    def close(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        self.node.destroy_timer(self._watch_timer)
        self._follower.close()
        if self._server is not None:
            self._server.stop()
            self._server = None
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for channel in channels:
            channel.close()

    # ----------------------------------------------------------------------------------- topics

    def discover(self) -> None:
        """One graph scan: new matching topics become channels, new matching services become SDK services."""
        self._follower.poll()
        self._discover_services()
        self._apply_watchers()

    def watchers_changed(self, topic: str, delta: int) -> None:
        """A client started (+1) or stopped (-1) watching a channel; any thread."""
        with self._lock:
            self._watchers[topic] = max(0, self._watchers.get(topic, 0) + delta)
            self._watchers_dirty = True

    @property
    def following(self) -> frozenset[str]:
        """Topics the server is subscribed to in ROS right now (the ones some client watches)."""
        return self._follower.following

    def _apply_watchers_if_changed(self) -> None:
        if self._watchers_dirty:
            self._apply_watchers()

    def _apply_watchers(self) -> None:
        with self._lock:
            self._watchers_dirty = False
            watched = {topic for topic, count in self._watchers.items() if count > 0}
        for topic in watched - self._follower.following:
            self._follower.follow(topic)
        for topic in self._follower.following - watched:
            self._follower.unfollow(topic)

    @property
    def channels(self) -> dict[str, str]:
        """Exposed topics and their schema names."""
        with self._lock:
            return {topic: channel.schema_name() or '' for topic, channel in self._channels.items()}

    def _on_new_topic(self, topic: DiscoveredTopic) -> bool:
        try:
            definition = self._schemas.message(topic.type_name)
        except SchemaNotFound as exc:
            self.log.warning(f'topic {topic.name}: {exc}; not exposed')
            return False
        channel = Channel(
            topic.name,
            schema=Schema(name=schema_name(topic.type_name), encoding='ros2msg', data=definition.encode()),
            message_encoding='cdr',
            context=self._context,
        )
        with self._lock:
            self._channels[topic.name] = channel
        return True

    def _on_message(self, topic: DiscoveredTopic, data: bytes) -> None:
        channel = self._channels.get(topic.name)
        if channel is not None:
            channel.log(data, log_time=time.time_ns())

    # ----------------------------------------------------------------------------------- services

    def _discover_services(self) -> None:
        if self._server is None:
            return
        new: list[Service] = []
        for name, types in self.node.get_service_names_and_types():
            if name in self._forwarders or name in self._refused_services or not self._service_selector.matches(name):
                continue
            type_name = types[0] if len(types) == 1 else ''
            if type_name not in self.policy.service_roles:
                self._refused_services.add(name)
                continue
            try:
                service = self._make_service(name, type_name)
            except (SchemaNotFound, InterfaceImportError) as exc:
                self.log.warning(f'service {name}: {exc}; not exposed')
                self._refused_services.add(name)
                continue
            new.append(service)
        if new:
            self._server.add_services(new)
            self.log.info(f'exposing services {[s.name for s in new]}')

    def _make_service(self, name: str, type_name: str) -> Service:
        request_text, response_text = self._schemas.service(type_name)
        srv_class = import_interface(type_name, kind='srv')
        forwarder = RosServiceForwarder(
            self.node, name, type_name, srv_class, timeout_sec=self.settings.service_timeout_sec
        )
        self._forwarders[name] = forwarder
        base = schema_name(type_name)

        def handler(request: ServiceRequest) -> bytes:
            role = self._roles.require(request.client_id, name, type_name)
            if request.encoding != 'cdr':
                raise ValueError(f'{name}: request encoding must be cdr, got {request.encoding!r}')
            self.log.info(f'client {request.client_id} ({role}) calls {name} (call {request.call_id})')
            return forwarder.call(request.payload)

        return Service(
            name,
            schema=ServiceSchema(
                base,
                request=MessageSchema(
                    encoding='cdr',
                    schema=Schema(name=f'{base}_Request', encoding='ros2msg', data=request_text.encode()),
                ),
                response=MessageSchema(
                    encoding='cdr',
                    schema=Schema(name=f'{base}_Response', encoding='ros2msg', data=response_text.encode()),
                ),
            ),
            handler=handler,
        )

    @property
    def services(self) -> list[str]:
        return [LOGIN_SERVICE, *self._forwarders]

    # ----------------------------------------------------------------------------------- parameters

    def parameter_values(self, names: Sequence[str]) -> list[Any]:
        values = dict(self.settings.parameters)
        values['bridge.topics'] = list(self.settings.topics)
        values['bridge.services'] = list(self.settings.services)
        with self._lock:
            values['bridge.exposed_topics'] = sorted(self._channels)
        wanted = names or sorted(values)
        return [Parameter(n, value=values[n]) for n in wanted if n in values]

    def publish_status(self, message: str, *, warning: bool = False) -> None:
        if self._server is not None:
            self._server.publish_status(message, StatusLevel.Warning if warning else StatusLevel.Info)


# --------------------------------------------------------------------------------------------- entry point


def _fleet_parameters(config_path: str | None) -> dict[str, Any]:
    if not config_path:
        return {}
    from fleet_core.config import load_fleet_config  # noqa: PLC0415 - optional, only with --config

    config = load_fleet_config(config_path)
    params: dict[str, Any] = {'fleet.sites': list(config.sites), 'fleet.agents_total': config.agent_count}
    for shard in config.shards:
        params[f'fleet.{shard.site_id}.{shard.shard_id}.agents'] = len(shard.agents)
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='fleet_foxglove', description='Foxglove WebSocket server for the fleet.')
    parser.add_argument('--host', default='127.0.0.1', help='bind address (non-loopback requires --tokens)')
    parser.add_argument('--port', type=int, default=8765, help='TCP port (0 picks a free one)')
    parser.add_argument('--topic', action='append', dest='topics', help=f'topic glob (default {DEFAULT_TOPIC_GLOBS})')
    parser.add_argument('--service', action='append', dest='services', help='service glob to forward')
    parser.add_argument('--tokens', default=None, help='YAML file mapping token to role (viewer, operator)')
    parser.add_argument('--config', default=None, help='fleet layout YAML, shown as read-only parameters')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tokens = {}
        if args.tokens:
            tokens = parse_tokens(yaml.safe_load(Path(args.tokens).read_text()), args.tokens)
        policy = AccessPolicy(tokens=tokens)
        policy.check_bind(args.host)
        settings = FoxgloveSettings(
            host=args.host,
            port=args.port,
            topics=tuple(args.topics or DEFAULT_TOPIC_GLOBS),
            services=tuple(args.services or DEFAULT_SERVICE_GLOBS),
            parameters=_fleet_parameters(args.config),
        )
    except (AccessConfigError, OSError, yaml.YAMLError, ValueError) as exc:
        print(f'fleet_foxglove: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    rclpy.init()
    executor = EventsExecutor()
    node = Node('fleet_foxglove')
    executor.add_node(node)
    bridge = FleetFoxgloveBridge(node, settings, policy)
    spin = SpinThread(executor, name='foxglove-rclpy')
    stop = threading.Event()
    try:
        port = bridge.start()
        print(f'fleet_foxglove: listening on ws://{settings.host}:{port}', flush=True)
        spin.start()
        while not stop.wait(0.5):
            if not executor.context.ok():
                break
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        spin.stop()
        bridge.close()
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())

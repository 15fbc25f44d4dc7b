"""The fleet's Foxglove WebSocket server (foxglove-sdk): fleet topics as CDR passthrough with ros2msg schemas,
operator services forwarded to the orchestrators, role-checked client publish (e-stop), the ROS connection graph,
server time and a read-only parameter view. With tokens configured, clients reach the SDK only through the access
gate (`foxglove_gate_server`), which shows data channels to logged-in clients only.

Threads: the SDK runs its own server threads and calls listeners and service handlers on them; rclpy spins an
EventsExecutor in a SpinThread; the gate runs its own asyncio thread. Raw subscription callbacks (executor thread)
log bytes straight into SDK channels; service handlers (SDK threads) wait on rclpy futures that the executor
completes; client publications are carried out on a small worker pool.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import foxglove
from foxglove import (
    Channel,
    Context,
    MessageSchema,
    Parameter,
    Schema,
    Service,
    ServiceRequest,
    ServiceSchema,
)
from foxglove.websocket import (
    Capability,
    ChannelView,
    Client,
    ClientChannel,
    ServerListener,
    StatusLevel,
    WebSocketServer,
)
from rclpy.node import Node
from rclpy.timer import Timer

from fleet_core import topics
from fleet_observability.discovery import DiscoveredTopic, InterfaceImportError, RawTopicFollower, import_interface
from fleet_observability.foxglove_gate import GateSettings
from fleet_observability.foxglove_gate_server import FoxgloveGate, GateStartError, tls_context
from fleet_observability.foxglove_graph import GraphSnapshot, ros_graph
from fleet_observability.foxglove_publish import ClientPublication, ClientPublications, PublishRefused
from fleet_observability.foxglove_services import (
    LOGIN_SERVICE,
    AccessError,
    AccessPolicy,
    ClientRoles,
    LoginHandler,
    RosServiceForwarder,
)
from fleet_observability.ros2msg import SchemaLibrary, SchemaNotFound, schema_name
from fleet_observability.topic_match import DEFAULT_TOPIC_GLOBS, TopicSelector

DEFAULT_SERVICE_GLOBS: tuple[str, ...] = topics.shards_globs(topics.SHARD_OPERATOR_SERVICES)
WATCH_PERIOD_SEC = 0.05


class FoxgloveStartError(RuntimeError):
    """The server could not start: port in use, unusable TLS certificate or key (the message says which)."""


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
    time_period_sec: float = 0.5
    """How often the server time (the node's ROS clock) is broadcast."""
    tls_cert: Path | None = None
    """PEM certificate: serve wss:// only (with tls_key, a PKCS#8 PEM key)."""
    tls_key: Path | None = None
    max_clients: int = 64
    """Connections the access gate accepts at once (tokens configured)."""
    gate: GateSettings = field(default_factory=GateSettings)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Read-only values shown in Foxglove's Parameters panel (e.g. the fleet layout)."""

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError('TLS needs both a certificate and a key (tls_cert and tls_key), or neither')

    @property
    def scheme(self) -> str:
        return 'ws' if self.tls_cert is None else 'wss'


class _Listener(ServerListener):
    """SDK listener: parameters are a read-only view; subscriptions are logged with the client id; client
    publications go through the role check; the connection graph is built while someone watches it."""

    def __init__(self, bridge: FleetFoxgloveBridge) -> None:
        self._bridge = bridge

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        self._bridge.log.debug(f'client {client.id} subscribed to {channel.topic}')
        self._bridge.watchers_changed(channel.topic, +1)

    def on_unsubscribe(self, client: Client, channel: ChannelView) -> None:
        self._bridge.log.debug(f'client {client.id} unsubscribed from {channel.topic}')
        self._bridge.watchers_changed(channel.topic, -1)

    def on_client_advertise(self, client: Client, channel: ClientChannel) -> None:
        self._bridge.client_advertised(client.id, channel)

    def on_client_unadvertise(self, client: Client, client_channel_id: int) -> None:
        self._bridge.publications.unadvertise(client.id, client_channel_id)

    def on_message_data(self, client: Client, client_channel_id: int, data: bytes) -> None:
        self._bridge.publications.message(client.id, client_channel_id, data)

    def on_connection_graph_subscribe(self) -> None:
        self._bridge.graph_watched(True)

    def on_connection_graph_unsubscribe(self) -> None:
        self._bridge.graph_watched(False)

    def on_get_parameters(
        self, client: Client, param_names: list[str], request_id: str | None = None
    ) -> list[Parameter]:
        return self._bridge.parameter_values(param_names)

    def on_set_parameters(
        self, client: Client, parameters: list[Parameter], request_id: str | None = None
    ) -> list[Parameter]:
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
        self.publications = ClientPublications(
            self.policy, self._forwarders.get, lambda text, warn: self.publish_status(text, warning=warn), self.log
        )
        self._gate: FoxgloveGate | None = None
        self._graph_watched = False
        self._graph_published: GraphSnapshot | None = None
        self._time_timer: Timer | None = None
        # Lazy: a ROS topic is subscribed only while some client watches its channel.
        self._follower = RawTopicFollower(
            node, TopicSelector(include=settings.topics), self._on_message, on_new=self._on_new_topic, eager=False
        )
        self._server: WebSocketServer | None = None
        self._timer: Timer | None = None
        self._lock = threading.Lock()
        self._watchers: dict[str, int] = {}
        self._watchers_dirty = False
        # Client (un)subscriptions arrive on the SDK's thread; ROS subscriptions change on the executor's, within
        # one WATCH_PERIOD_SEC (the EventsExecutor has no guard conditions to wake it sooner).
        self._watch_timer = node.create_timer(WATCH_PERIOD_SEC, self._apply_watchers_if_changed)

    # ----------------------------------------------------------------------------------- lifecycle

    def start(self) -> int:
        """Start serving; returns the bound port (settings.port 0 picks a free one). Raises FoxgloveStartError."""
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
            handler=self._handle_login,
        )
        settings = self.settings
        # Open (loopback, no tokens): clients talk to the SDK directly, which terminates TLS itself.
        # Tokens: the SDK listens on an ephemeral loopback port and only the gate, which terminates TLS, faces clients.
        gated = not self.policy.open
        tls: tuple[bytes, bytes] | None = None  # (certificate, key) PEM for the SDK
        if settings.tls_cert is not None and settings.tls_key is not None and not gated:
            tls = (settings.tls_cert.read_bytes(), settings.tls_key.read_bytes())
        ssl_context = None
        if gated and settings.tls_cert is not None and settings.tls_key is not None:
            try:
                ssl_context = tls_context(settings.tls_cert, settings.tls_key)
            except GateStartError as exc:
                raise FoxgloveStartError(str(exc)) from None
        try:
            self._server = self._start_sdk(settings, gated, tls, login)
        except RuntimeError as exc:  # the SDK's FoxgloveError: bind failure, unusable TLS files
            where = f'{settings.host}:{settings.port}'
            raise FoxgloveStartError(f'cannot start the Foxglove server on {where}: {exc}') from None
        if gated:
            self._gate = FoxgloveGate(
                host=settings.host,
                port=settings.port,
                upstream_port=self._server.port,
                policy=self.policy,
                settings=settings.gate,
                logger=self.log,
                ssl_context=ssl_context,
                max_clients=settings.max_clients,
            )
            try:
                self._gate.start()
            except GateStartError as exc:
                self._server.stop()
                self._server = None
                raise FoxgloveStartError(str(exc)) from None
        self.discover()
        self._timer = self.node.create_timer(settings.discovery_period_sec, self.discover)
        self._time_timer = self.node.create_timer(settings.time_period_sec, self._broadcast_time)
        self.log.info(f'foxglove server on {self.url} (tokens: {gated})')
        return self.port

    def _start_sdk(
        self, settings: FoxgloveSettings, gated: bool, tls: tuple[bytes, bytes] | None, login: Service
    ) -> WebSocketServer:
        return foxglove.start_server(
            name=settings.name,
            host='127.0.0.1' if gated else settings.host,
            port=0 if gated else settings.port,
            capabilities=[
                Capability.Services,
                Capability.Parameters,
                Capability.ClientPublish,
                Capability.ConnectionGraph,
                Capability.Time,
            ],
            supported_encodings=['cdr', 'json'],
            services=[login],
            server_listener=_Listener(self),
            context=self._context,
            message_backlog_size=settings.message_backlog,
            tls_cert=tls[0] if tls is not None else None,
            tls_key=tls[1] if tls is not None else None,
        )

    def _handle_login(self, request: ServiceRequest) -> bytes:
        try:
            return self._login.handle(request.client_id, request.payload)
        except (AccessError, ValueError) as exc:
            self.log.warning(f'client {request.client_id}: {exc}')
            raise

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError('FleetFoxgloveBridge.start() has not been called')
        return self._gate.port if self._gate is not None else self._server.port

    @property
    def gate_clients(self) -> int:
        """Connections the access gate relays right now (0 without tokens)."""
        return self._gate.client_count if self._gate is not None else 0

    @property
    def url(self) -> str:
        return f'{self.settings.scheme}://{self.settings.host}:{self.port}'

    def close(self) -> None:
        for timer in (self._timer, self._time_timer):
            if timer is not None:
                self.node.destroy_timer(timer)
        self._timer = self._time_timer = None
        self.node.destroy_timer(self._watch_timer)
        self._follower.close()
        if self._gate is not None:
            self._gate.stop()
            self._gate = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.publications.close()  # before the forwarders: its workers may still be calling one
        for forwarder in self._forwarders.values():
            forwarder.close()
        self._forwarders.clear()
        self._refused_services.clear()
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
        if self._graph_watched:
            self._publish_graph()

    def _broadcast_time(self) -> None:
        if self._server is not None:
            self._server.broadcast_time(self.node.get_clock().now().nanoseconds)

    # ----------------------------------------------------------------------------------- connection graph

    def graph_watched(self, watched: bool) -> None:
        """SDK thread: the first client subscribed to the graph (True) or the last left (False)."""
        self._graph_watched = watched
        self._graph_published = None  # publish in full on the next discovery tick (never from the callback)

    def _publish_graph(self) -> None:
        snapshot = ros_graph(self.node, self.channels, self._forwarders)
        if snapshot == self._graph_published or self._server is None:
            return
        self._server.publish_connection_graph(snapshot.to_sdk())
        self._graph_published = snapshot

    # ----------------------------------------------------------------------------------- client publish

    def client_advertised(self, client_id: int, channel: ClientChannel) -> None:
        """SDK thread: a client advertised a channel to publish on; kept only when its role allows it."""
        role = self._roles.role_of(client_id)
        publication = ClientPublication(
            client_id=client_id,
            role=role,
            topic=channel.topic,
            encoding=channel.encoding,
            schema_name=channel.schema_name,
        )
        try:
            self.publications.advertise(publication, channel.id)
        except PublishRefused as exc:
            self.log.warning(f'client {client_id} ({role or "not logged in"}): client publish refused: {exc}')
            return
        self.log.info(f'client {client_id} ({role}) may publish {channel.schema_name} on {channel.topic}')

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

    def channel_id(self, topic: str) -> int:
        """The Foxglove channel id of an exposed topic. Raises KeyError."""
        with self._lock:
            return int(self._channels[topic].id())

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

    def parameter_values(self, names: Sequence[str]) -> list[Parameter]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """The `fleet_foxglove` console script: see `foxglove_node.main`."""
    from fleet_observability.foxglove_node import main as run_node  # noqa: PLC0415 - foxglove_node imports this module

    return run_node(argv)


if __name__ == '__main__':
    sys.exit(main())

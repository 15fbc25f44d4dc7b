"""The gateway's composition root. `GatewayServer` binds the listening socket, admits and authenticates connections at
the HTTP stage, and wires each connection (`transport/`) to its client session (`protocol/`) and to the ROS side
(`ros/`). It owns the event loop's thread; rclpy spins in a SpinThread.

Per connection: each incoming message goes to the session synchronously from the read path
(`transport.frame_split`), the events it returns are applied to ROS through one table (`ros.dispatch`), and what
the session queued is flushed once per chunk read (`transport.connection`). ROS messages fan out to the sessions
subscribed to them (`EventDispatcher.fan_out`) and are flushed per connection.

Beyond capacity, per event-loop turn: after `ingest_budget_s` of incoming work, publishes to best-effort topics
are dropped unparsed and counted (`Shedder`, for at most `ingest_shed_budget_s` more); after that, or at once
when shedding is off, a client's data waits for the next turn and its socket is not read meanwhile (TCP pushes
back). A client above its `ops_per_s` is not read for a while. What waits is in that client's kernel buffers
(`receive_buffer_bytes`, set on the listening socket before any handshake, plus its own send buffer) and at most
one chunk held per connection, never in a growing gateway queue.
"""

from __future__ import annotations

import asyncio
import functools
import http
import itertools
import logging
import math
import socket
import ssl
import time
import urllib.parse
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from fleet_gateway.acl import AccessPolicy, Principal, TokenStore
from fleet_gateway.config import GatewayConfig
from fleet_gateway.protocol import events as ev
from fleet_gateway.protocol.fields import AuthThrottled
from fleet_gateway.protocol.published import PublishedMessage
from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.protocol.state import CLOSE_TRY_AGAIN
from fleet_gateway.ros.dispatch import EventDispatcher
from fleet_gateway.ros.endpoints import EndpointsFactory, RosEndpoints
from fleet_gateway.transport.budget import IngestBudget
from fleet_gateway.transport.connection import SEND_BUFFER, ClientConnection
from fleet_gateway.transport.frame_split import GatewayConnection
from fleet_gateway.transport.listener import listening_socket
from fleet_gateway.transport.shared import Shared
from fleet_gateway.transport.shedding import Shedder

log = logging.getLogger('fleet_gateway.server')


class GatewayNotStarted(RuntimeError):
    """A method that needs the ROS side ran before `GatewayServer.start()` (a programming error)."""

    def __init__(self) -> None:
        super().__init__('GatewayServer.start() has not been called')


class GatewayServer:
    """Serves the rosbridge v2 protocol. `await start()` binds; `port` is the bound port; `stats()` for metrics.
    `shared`: the admission counts, failed-authentication limits and served names it shares with the other workers
    of a cluster (`transport.shared`); by default its own, as a single gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        policy: AccessPolicy,
        tokens: TokenStore,
        endpoints_factory: EndpointsFactory,
        shared: Shared | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.tokens = tokens
        self._endpoints_factory = endpoints_factory
        self.ros: RosEndpoints | None = None
        self._dispatch: EventDispatcher | None = None
        self.loop: Any = None
        self.connections: set[ClientConnection] = set()
        self.unauthenticated: set[ClientConnection] = set()
        """Connections still waiting for their `auth` op: their own pool, outside `admission.max_clients`."""
        self.shared = shared or Shared.local(config.admission)
        self._auth_failures = self.shared.auth_failures
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._admitted: dict[ServerConnection, Principal | None] = {}
        """Handshakes admitted whose session has not started yet (counted in the published sessions already)."""
        self.counters = {
            'sessions_admitted': 0,
            'sessions_closed': 0,
            'rejected_admission': 0,
            'rejected_auth': 0,
            'rejected_auth_throttled': 0,
            'rejected_unauthenticated': 0,
            'auth_timeouts': 0,
            'dropped_closed_sessions': 0,
            'shed_closed_sessions': 0,
            'errors_closed_sessions': 0,
            'internal_errors': 0,
        }
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        self.ros = self._endpoints_factory(loop, self._on_ros_messages)
        # a served service or action is unique in the cluster
        self.ros.share_served_names(self.shared.served, self.shared.worker)
        self._dispatch = EventDispatcher(self.ros, loop, internal_error=self._internal_error)
        self._budget = IngestBudget(loop, self.config.ingest_budget_s)
        ssl_context = None
        if self.config.tls is not None:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_context.load_cert_chain(self.config.tls.cert, self.config.tls.key)
        self._server = await serve(
            self._handle,
            sock=listening_socket(
                self.config.host, self.config.port, self.config.receive_buffer_bytes, reuse_port=self.shared.reuse_port
            ),
            ssl=ssl_context,
            process_request=self._admit,
            create_connection=GatewayConnection,
            compression=None,
            max_size=self.config.limits.max_message_bytes,
            max_queue=16,
            ping_interval=20,
            ping_timeout=20,
            server_header='fleet_gateway' + ('' if self.shared.worker is None else f' (worker {self.shared.worker})'),
            backlog=2048,
        )
        sockets = list(self._server.sockets)
        self.port = sockets[0].getsockname()[1]
        scheme = 'wss' if ssl_context else 'ws'
        log.info('listening on %s://%s:%d', scheme, self.config.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- admission and authentication (HTTP stage, before the upgrade) ---------------------------------

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        admission = self.config.admission
        address = _address_of(connection)
        wait = self._auth_failures.retry_after(address)
        if wait > 0:  # this address failed too often: no token is checked until it may try again
            self.counters['rejected_auth_throttled'] += 1
            response = connection.respond(
                http.HTTPStatus.TOO_MANY_REQUESTS, f'too many failed authentications; retry in {math.ceil(wait)} s\n'
            )
            response.headers['Retry-After'] = str(math.ceil(wait))
            return response
        token = _token_of(request)
        principal: Principal | None = None
        if token is not None:
            principal = self.tokens.authenticate(token)
            if principal is None:
                self.counters['rejected_auth'] += 1
                self._auth_failures.record(address)
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, 'unknown token\n')
        elif self.config.anonymous_role is not None:
            principal = Principal('anonymous', self.config.anonymous_role)
        # the new session is counted now, before the response goes out (the client may connect again, to another
        # worker, as soon as it has it); checking the whole cluster's sum and counting it are one step
        authenticated, unauthenticated = self._counts()
        if principal is None:
            counts, pool, limit = (authenticated, unauthenticated + 1), 1, admission.max_unauthenticated
        else:
            counts, pool, limit = (authenticated + 1, unauthenticated), 0, admission.max_clients
        if not self.shared.admission.admit(counts, pool, limit):
            if principal is None:
                self.counters['rejected_unauthenticated'] += 1
                return self._retry_later(
                    connection, f'{admission.max_unauthenticated} clients are waiting to authenticate already'
                )
            self.counters['rejected_admission'] += 1
            return self._retry_later(connection, f'the gateway is at its limit of {admission.max_clients} clients')
        if not self.shared.new_sessions.try_take():
            self._sessions_changed()  # not admitted after all
            self.counters['rejected_admission'] += 1
            return self._retry_later(connection, f'the gateway admits {admission.rate:g} new sessions per second')
        self._admitted[connection] = principal
        # a handshake that never becomes a session (the client left, the server is closing) gives its place back
        connection.connection_lost_waiter.add_done_callback(lambda _: self._admission_lapsed(connection))
        return None

    def _admission_lapsed(self, connection: ServerConnection) -> None:
        if connection in self._admitted:  # else its session started (and counts itself)
            del self._admitted[connection]
            self._sessions_changed()

    def _counts(self) -> tuple[int, int]:
        """(authenticated, unauthenticated) sessions of this gateway, admitted handshakes included."""
        waiting = sum(1 for principal in self._admitted.values() if principal is None)
        authenticated = len(self.connections) - len(self.unauthenticated) + len(self._admitted) - waiting
        return authenticated, len(self.unauthenticated) + waiting

    def _sessions_changed(self) -> None:
        """Tell the cluster this gateway's session counts (admission reads the sums)."""
        self.shared.admission.publish(*self._counts())

    def _authenticate_op(self, address: str, token: str) -> Principal | None:
        """A session's `auth` op: refused unchecked while `address` is throttled; a failure counts against it."""
        if self._auth_failures.retry_after(address) > 0:
            self.counters['rejected_auth_throttled'] += 1
            raise AuthThrottled('too many failed authentications from this address; try again later')
        principal = self.tokens.authenticate(token)
        if principal is None:
            self._auth_failures.record(address)
        return principal

    def _retry_later(self, connection: ServerConnection, why: str) -> Response:
        delay = max(1, round(1.0 / self.config.admission.rate * max(1, len(self.connections) // 10)))
        response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, f'{why}; retry in {delay} s\n')
        response.headers['Retry-After'] = str(delay)
        return response

    # --- connections -----------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        if self.ros is None:
            raise GatewayNotStarted
        ros = self.ros
        loop = asyncio.get_running_loop()
        client_id = f'c{next(self._ids)}'
        session = ClientSession(
            client_id,
            policy=self.policy,
            principal=self._admitted.pop(ws, None),
            limits=self.config.limits,
            authenticate=functools.partial(self._authenticate_op, _address_of(ws)),
            resolve_topic_type=ros.topic_type,
            resolve_service_type=ros.service_type,
            clock=loop.time,
        )
        conn = ClientConnection(ws, session, loop)
        if isinstance(ws, GatewayConnection) and self.config.ingest_shed_budget_s > 0:
            ws.shed = Shedder(session, self._budget, self._sheddable)
            ws.hold = functools.partial(self._budget.over, self.config.ingest_shed_budget_s)
        conn.apply = self._apply
        if isinstance(ws, GatewayConnection):
            ws.on_pong = conn.on_pong
        sock = ws.transport.get_extra_info('socket')
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.connections.add(conn)
        if session.principal is None:
            self.unauthenticated.add(conn)
        self._sessions_changed()
        self.counters['sessions_admitted'] += 1
        peer = ws.remote_address
        who = session.principal.name if session.principal else 'unauthenticated'
        log.debug('client %s connected from %s as %s', client_id, peer, who)
        try:
            if isinstance(ws, GatewayConnection):
                ws.attach(lambda message: self._receive(conn, message), lambda: self._after_data(conn))
                await asyncio.wait([ws.connection_lost_waiter, conn.stopped], return_when=asyncio.FIRST_COMPLETED)
            else:  # a plain websockets connection (not created by this server's serve())
                async for message in ws:
                    self._receive(conn, message)
                    self._after_data(conn)
                    if conn.stopped.done():
                        break
                    if conn.read_paused:
                        await asyncio.sleep(session.read_pause)
                        conn.read_paused = False
        except ConnectionClosed:
            pass
        finally:
            await self._finish(conn)

    def _receive(self, conn: ClientConnection, message: str | bytes) -> None:
        """One incoming message (asyncio thread, synchronously from the read path)."""
        session = conn.session
        if self._budget.turn_start is None:
            self._budget.begin()
        events = session.receive_text(message) if isinstance(message, str) else session.receive_bytes(message)
        if events:
            self._apply(conn, events)

    def _sheddable(self, topic: str) -> bool:
        """Publishes to `topic` may be shed: best-effort on the ROS side and not a critical (command/safety) topic."""
        if self.ros is None:
            raise GatewayNotStarted
        return self.ros.topics.sheddable(topic)

    def _after_data(self, conn: ClientConnection) -> None:
        """After each chunk read from a client: send replies, arm timers, honour close and rate-limit requests."""
        session = conn.session
        if session.principal is not None and conn in self.unauthenticated:
            self.unauthenticated.discard(conn)  # it authenticated with an `auth` op: it joins the admitted pool
            self._sessions_changed()
            if self.shared.admission.totals()[0] > self.config.admission.max_clients:
                self.counters['rejected_admission'] += 1
                limit = self.config.admission.max_clients
                session.request_close(CLOSE_TRY_AGAIN, f'the gateway is at its limit of {limit} clients')
        conn.flush()
        conn.schedule_wake()
        if session.close_request is not None or conn.ws.protocol.state is not State.OPEN:
            if not conn.stopped.done():  # asked to close, or the client's close frame arrived: finish now
                conn.stopped.set_result(None)
            return
        if conn.read_paused or not isinstance(conn.ws, GatewayConnection):
            return
        if session.read_pause > 0:
            conn.read_paused = True  # rate limit: stop reading this socket for a while, TCP pushes back
            conn.ws.transport.pause_reading()
            self._spawn(self._resume_reading(conn, session.read_pause))
        elif self._budget.over(self.config.ingest_shed_budget_s if conn.ws.shed is not None else 0.0):
            # over this turn's ingest budget (and, while this connection's best-effort publishes can be shed, over
            # the shedding budget too): the other clients go first
            conn.read_paused = True
            conn.ws.transport.pause_reading()
            self.loop.call_soon(self._resume_now, conn)

    def _resume_now(self, conn: ClientConnection) -> None:
        conn.read_paused = False
        if not conn.closing and not conn.ws.transport.is_closing():
            conn.ws.transport.resume_reading()

    async def _resume_reading(self, conn: ClientConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        conn.read_paused = False
        if not conn.closing and not conn.ws.transport.is_closing():
            conn.ws.transport.resume_reading()

    async def _finish(self, conn: ClientConnection) -> None:
        session = conn.session
        request = session.close_request
        conn.closing = True
        conn.stop_timers()
        if conn in self.unauthenticated:
            self.unauthenticated.discard(conn)
            if request is not None and request.reason.startswith('not authenticated within'):
                self.counters['auth_timeouts'] += 1
        stats = session.stats()
        self.counters['dropped_closed_sessions'] += stats['dropped']
        self.counters['shed_closed_sessions'] += stats['shed']
        self.counters['errors_closed_sessions'] += stats['errors']
        self.counters['sessions_closed'] += 1
        self._apply(conn, session.finish())
        self.connections.discard(conn)
        self._sessions_changed()
        if request is not None:
            log.warning('closing client %s: %s', session.client_id, request.reason)
            await conn.ws.close(request.code, request.reason)
        log.debug('client %s gone: %s', session.client_id, stats)

    def _apply(self, conn: ClientConnection, events: list[ev.Event]) -> None:
        """Apply a session's events to the ROS side (`EventDispatcher.apply_all`)."""
        if self._dispatch is None:
            raise GatewayNotStarted
        self._dispatch.apply_all(conn, events)

    def _internal_error(self) -> None:
        self.counters['internal_errors'] += 1

    # --- ROS -> clients --------------------------------------------------------------------------------

    def _on_ros_messages(self, batch: list[PublishedMessage]) -> None:
        if self._dispatch is None:
            raise GatewayNotStarted
        for conn in self._dispatch.fan_out(batch):
            conn.flush()
            conn.schedule_wake()
            if conn.session.close_request is not None and not conn.closing:
                conn.closing = True
                request = conn.session.close_request
                self._spawn(conn.ws.close(request.code, request.reason))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, Any]:
        """Counters for the metrics exporter: gateway-wide totals plus live per-client figures."""
        clients = {conn.session.client_id: conn.session.stats() for conn in self.connections}
        return {
            **self.counters,
            'clients': len(self.connections),
            **(self.ros.stats() if self.ros else {}),
            'dropped_total': self.counters['dropped_closed_sessions'] + sum(c['dropped'] for c in clients.values()),
            'shed_total': self.counters['shed_closed_sessions'] + sum(c['shed'] for c in clients.values()),
            'per_client': clients,
            'time': time.time(),
        }


def _address_of(connection: ServerConnection) -> str:
    """The client's IP address (failed authentications are counted per address, whatever the port)."""
    peer = connection.remote_address
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def _token_of(request: Request) -> str | None:
    headers: Headers = request.headers
    auth = headers.get('Authorization', '')
    if auth.lower().startswith('bearer '):
        return auth[7:].strip()
    query = urllib.parse.urlsplit(request.path).query
    values = urllib.parse.parse_qs(query).get('token')
    return values[0] if values else None

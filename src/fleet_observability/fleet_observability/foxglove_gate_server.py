"""The asyncio adapter of the Foxglove access gate: the public (optionally TLS) listener that relays each client to
the foxglove-sdk server on loopback through its own `GateSession`.

It runs its event loop in one thread of its own; the SDK server behind it runs its own threads. One upstream
connection per client keeps the SDK's per-client state (subscriptions, service call client ids, roles) intact.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from fleet_observability.foxglove_gate import Close, Effect, GateSession, GateSettings, LoginThrottle, ToClient
from fleet_observability.foxglove_services import AccessPolicy

SUBPROTOCOLS: tuple[str, ...] = ('foxglove.sdk.v1',)
"""What foxglove-sdk speaks; the gate offers the same upstream."""
CLOSE_TRY_AGAIN_LATER = 1013
START_TIMEOUT_SEC = 10.0


class GateStartError(RuntimeError):
    """The gate could not bind its listener (address in use, bad TLS files, ...)."""


def tls_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context from PEM files. Raises GateStartError naming the files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise GateStartError(f'cannot load TLS certificate {cert} / key {key}: {exc}') from None
    return context


class _Closing(Exception):
    def __init__(self, close: Close) -> None:
        super().__init__(close.reason)
        self.close = close


class FoxgloveGate:
    """`start()` binds and returns the port; `stop()` closes every relayed connection and the listener."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        upstream_port: int,
        policy: AccessPolicy,
        settings: GateSettings,
        logger: Any,
        ssl_context: ssl.SSLContext | None = None,
        max_clients: int = 64,
        max_client_message_bytes: int = 1 << 20,
        subprotocols: Sequence[str] = SUBPROTOCOLS,
    ) -> None:
        self._host = host
        self._port = port
        self._upstream = f'ws://127.0.0.1:{upstream_port}'
        self._policy = policy
        self._settings = settings
        self._log = logger
        self._ssl = ssl_context
        self._max_clients = max_clients
        self._max_message = max_client_message_bytes
        self._subprotocols = [Subprotocol(p) for p in subprotocols]
        self._throttle = LoginThrottle(settings, clock=time.monotonic)
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._clients: set[ServerConnection] = set()
        self._thread: threading.Thread | None = None
        self._bound_port = 0

    @property
    def port(self) -> int:
        return self._bound_port

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def start(self) -> int:
        started = threading.Event()
        failure: list[BaseException] = []

        async def bind() -> int:
            self._server = await serve(
                self._handle,
                self._host,
                self._port,
                ssl=self._ssl,
                subprotocols=self._subprotocols,
                max_size=self._max_message,
                compression=None,
            )
            return int(self._server.sockets[0].getsockname()[1])

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._bound_port = self._loop.run_until_complete(bind())
            except OSError as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name='foxglove-gate', daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_SEC):
            raise GateStartError(f'the gate did not bind {self._host}:{self._port} within {START_TIMEOUT_SEC}s')
        if failure:
            self._thread.join()
            raise GateStartError(f'cannot listen on {self._host}:{self._port}: {failure[0]}')
        return self._bound_port

    def stop(self) -> None:
        if self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        future = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        try:
            future.result(timeout=START_TIMEOUT_SEC)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=START_TIMEOUT_SEC)
            self._thread = None
            if not self._loop.is_running():
                self._loop.close()

    # ------------------------------------------------------------------------------------------- per client

    async def _handle(self, client: ServerConnection) -> None:
        peer = str(client.remote_address[0]) if client.remote_address else 'unknown'
        if len(self._clients) >= self._max_clients:
            self._log.warning(f'foxglove gate: refusing {peer}: {self._max_clients} clients connected already')
            await client.close(CLOSE_TRY_AGAIN_LATER, 'too many clients')
            return
        self._clients.add(client)
        session = GateSession(
            peer=peer,
            policy=self._policy,
            settings=self._settings,
            throttle=self._throttle,
            on_role=lambda role: self._log.info(f'foxglove client {peer} logged in as {role}'),
        )
        try:
            async with connect(
                self._upstream,
                subprotocols=[client.subprotocol or self._subprotocols[0]],
                max_size=None,
                compression=None,
                open_timeout=START_TIMEOUT_SEC,
            ) as upstream:
                await self._relay(client, upstream, session)
        except _Closing as closing:
            self._log.warning(f'foxglove gate: closing {peer}: {closing.close.reason}')
            await client.close(closing.close.code, closing.close.reason)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            self._log.error(f'foxglove gate: cannot reach the Foxglove server at {self._upstream}: {exc}')
            await client.close(CLOSE_TRY_AGAIN_LATER, 'Foxglove server unavailable')
        finally:
            self._clients.discard(client)

    async def _relay(self, client: ServerConnection, upstream: ClientConnection, session: GateSession) -> None:
        async def pump(
            source: ServerConnection | ClientConnection,
            text: Callable[[str], list[Effect]],
            binary: Callable[[bytes], list[Effect]],
        ) -> None:
            async for frame in source:
                await self._apply(text(frame) if isinstance(frame, str) else binary(frame), client, upstream)

        tasks = [
            asyncio.ensure_future(pump(client, session.client_text, session.client_binary)),
            asyncio.ensure_future(pump(upstream, session.upstream_text, session.upstream_binary)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if isinstance(exc, _Closing):
                raise exc
            if exc is not None and not isinstance(exc, ConnectionClosed):
                raise exc

    @staticmethod
    async def _apply(effects: list[Effect], client: ServerConnection, upstream: ClientConnection) -> None:
        for effect in effects:
            if isinstance(effect, Close):
                raise _Closing(effect)
            if isinstance(effect, ToClient):
                await client.send(effect.data)
                continue
            if effect.delay_sec > 0:
                await asyncio.sleep(effect.delay_sec)  # the login slowdown: this client's frames wait too
            await upstream.send(effect.data)

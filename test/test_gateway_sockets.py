"""The gateway's sockets, in-process (no ROS): the receive buffer is set on the listening socket, before any
handshake, so every accepted connection starts with it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from websockets.asyncio.client import connect

from fleet_gateway.acl import Principal, TokenStore
from fleet_gateway.config import GatewayConfig, load_acl
from fleet_gateway.server import GatewayServer


class NoRos:
    """Stands in for the rclpy endpoints: nothing is published or subscribed in this test."""

    received = 0
    served_calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _receive_buffer_of_accepted(configured: int) -> tuple[int, int]:
    """SO_RCVBUF of the listening socket and of the first accepted connection, for a configured value."""
    server = GatewayServer(
        GatewayConfig(port=0, receive_buffer_bytes=configured),
        load_acl(None),
        TokenStore({'tok': Principal('t', 'viewer')}),
        lambda loop, on_messages: NoRos(),
    )

    async def scenario() -> tuple[int, int]:
        await server.start()
        try:
            listening = next(iter(server._server.sockets))
            async with connect(f'ws://127.0.0.1:{server.port}/?token=tok'):
                for _ in range(100):
                    if server.connections:
                        break
                    await asyncio.sleep(0.01)
                conn = next(iter(server.connections))
                accepted = conn.ws.transport.get_extra_info('socket')
                return (
                    listening.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                    accepted.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                )
        finally:
            await server.close()

    return asyncio.run(scenario())


def test_accepted_connections_inherit_the_configured_receive_buffer():
    small_listening, small_accepted = _receive_buffer_of_accepted(8192)
    large_listening, large_accepted = _receive_buffer_of_accepted(256 * 1024)
    # Linux doubles the requested value for its bookkeeping; what matters is that the accepted socket has the
    # listening socket's value (set before the handshake), and that the setting is what decides it
    assert small_accepted == small_listening == 2 * 8192
    assert large_accepted == large_listening == 2 * 256 * 1024

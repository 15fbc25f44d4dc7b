"""Service calls made for WebSocket clients (call_service): the node's service clients, shared by all clients, and
the call itself, awaited in the asyncio thread; the session turns the outcome into a `service_response`."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from rclpy.node import Node

from fleet_gateway.protocol.events import CallService
from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.ros.asyncio_bridge import asyncio_future, wait_until
from fleet_ros import qos as fleet_qos


class CallOwner(Protocol):
    """The connection a call belongs to (`transport.connection.ClientConnection`)."""

    session: ClientSession

    def flush(self) -> None: ...


class ServiceClients:
    """One client per (service, type), created on first use."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop, *, server_wait_s: float) -> None:
        self.node = node
        self.loop = loop
        self.server_wait_s = server_wait_s
        """At most how long a call waits for its service to appear (`call_service_wait_s`)."""
        self._clients: dict[tuple[str, type], Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def client(self, service: str, srv_cls: type) -> Any:
        key = (service, srv_cls)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self.node.create_client(srv_cls, service, qos_profile=fleet_qos.SERVICE_CALLS)
        return client

    def start(self, owner: CallOwner, event: CallService) -> None:
        """Make the call in a task of its own; its answer goes to `owner.session.service_result`."""
        task = self.loop.create_task(self._call(owner, event))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _call(self, owner: CallOwner, event: CallService) -> None:
        session = owner.session
        client = self.client(event.service, event.srv_cls)
        if not await wait_until(client.service_is_ready, min(event.timeout_s, self.server_wait_s)):
            session.service_result(event.call_no, None, f'service {event.service} is not available')
            owner.flush()
            return
        ros_future = client.call_async(event.request)
        try:
            response = await asyncio.wait_for(asyncio_future(self.loop, ros_future), event.timeout_s)
            session.service_result(event.call_no, response)
        except TimeoutError:
            client.remove_pending_request(ros_future)
            session.service_result(
                event.call_no, None, f'service {event.service} timed out after {event.timeout_s:g} s'
            )
        except Exception as exc:  # noqa: BLE001 - boundary: whatever the call raised, the caller gets a failed response
            session.service_result(event.call_no, None, f'service {event.service} failed: {exc}')
        owner.flush()

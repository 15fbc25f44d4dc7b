"""ROS services the gateway serves for WebSocket clients (advertise_service), on the `ServedRegistry` mechanism.

rclpy's EventsExecutor calls a service callback with (request, response) only and sends whatever it returns with
`service.send_response(returned, header)`; it does not await coroutine callbacks (it tries to send the coroutine
object, raises TypeError and ends the spin). So the callback returns a `_Deferred` marker and the service's
`send_response` is wrapped: for a marker it keeps the request header and hands (request, header) to the loop; the
real reply is sent later with `Service.send_response(response, header)` from the asyncio thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.service import Service

from fleet_gateway.ros import graph
from fleet_gateway.ros.served import ServedEndpoint, ServedRegistry
from fleet_gateway.transport.shared import ServedNames
from fleet_ros import qos as fleet_qos

log = logging.getLogger('fleet_gateway.ros')

RETIRE_S = 1.0
"""How long a service unadvertised with calls waiting outlives the failed responses it sent them (calls that arrive
meanwhile are failed at once)."""

OnServiceRequest = Callable[[Any, str, int, Any], None]
"""(owner, service, token, request), called in the asyncio thread for each ROS call to a client-served service."""


def failed_response(srv_cls: type, why: str) -> Any:
    """What a ROS caller gets when the serving client fails, times out or goes away: a default response, with
    the reason in a `message` string field when the type has one (std_srvs/Trigger, SetBool, ...)."""
    response = srv_cls.Response()  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
    if response.get_fields_and_field_types().get('message') == 'string':
        response.message = why[:500]
    return response


class _Deferred:
    """Returned by a served service's callback instead of a response: the answer comes later."""

    __slots__ = ('request',)

    def __init__(self, request: Any) -> None:
        self.request = request


Served = ServedEndpoint[Any]
"""A served service; `waiting` maps tokens to the request headers of calls forwarded to its client."""


class ClientServedServices:
    """The services of one gateway node served by its clients. Owned by the asyncio thread."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop
        self._ours = graph.cluster_nodes(node, None)
        self._registry: ServedRegistry[Any] = ServedRegistry(
            'service', lambda service: graph.served_elsewhere(node, service, self._ours)
        )
        self.on_request: OnServiceRequest | None = None
        self.counters = {'forwarded': 0, 'answered': 0, 'failed': 0}

    def advertise(self, service: str, srv_cls: type, owner: Any) -> None:
        """Serve `service` in ROS for `owner`; requests go to `on_request` in the asyncio thread. Raises
        EndpointConflict when anyone else serves it already."""
        if self._registry.claim(service, srv_cls, owner):
            return
        served: Served = ServedEndpoint(service, srv_cls, owner)
        loop = self.loop

        def callback(request: Any, _response: Any) -> _Deferred:  # spin thread
            return _Deferred(request)

        try:
            server = self.node.create_service(srv_cls, service, callback, qos_profile=fleet_qos.SERVICE_CALLS)
        except Exception:
            self._registry.abandon(service, owner)
            raise

        def send_response(response: Any, header: Any) -> None:  # spin thread, right after `callback`
            if not isinstance(response, _Deferred):
                Service.send_response(server, response, header)
                return
            try:
                loop.call_soon_threadsafe(self._arrived, served, response.request, header)
            except RuntimeError:  # the loop closed during shutdown: nobody is left to answer
                log.debug('dropping a call to %s: the event loop is closed', service)

        # Never raise from here: an exception escaping a callback ends the EventsExecutor's spin.
        server.send_response = send_response  # type: ignore[method-assign]  # this one service answers deferred calls itself
        served.server = server
        self._registry.add(served)

    def _arrived(self, served: Served, request: Any, header: Any) -> None:
        """Asyncio thread: a ROS call arrived for a client-served service."""
        if served.closed:
            self._send(served, failed_response(served.cls, f'{served.name} is no longer served'), header)
            return
        token = self._registry.new_token()
        served.waiting[token] = header
        self.counters['forwarded'] += 1
        if self.on_request is None:
            self.reply(served.name, token, None, 'the gateway is shutting down')
            return
        self.on_request(served.owner, served.name, token, request)

    def reply(self, service: str, token: int, response: Any | None, error: str | None = None) -> None:
        """Answer one forwarded call (a failed one when `response` is None); unknown tokens are ignored."""
        taken = self._registry.take(service, token)
        if taken is None:
            return
        served, header = taken
        if response is None:
            self.counters['failed'] += 1
            response = failed_response(served.cls, error or f'{service} failed')
        else:
            self.counters['answered'] += 1
        self._send(served, response, header)

    def _send(self, served: Served, response: Any, header: Any) -> None:
        try:
            Service.send_response(served.server, response, header)
        except Exception:  # a destroyed service or a caller gone: nothing else can be done for this call
            log.warning('could not answer a call to %s', served.name, exc_info=True)

    def unadvertise(self, service: str, owner: Any, why: str = 'the serving client unadvertised it') -> None:
        """Stop serving `service`: every call still waiting gets a failed response now, then the service goes."""
        served = self._registry.release(service, owner)
        if served is None:
            return
        failed = bool(served.waiting)
        for header in served.waiting.values():
            self.counters['failed'] += 1
            self._send(served, failed_response(served.cls, f'{service}: {why}'), header)
        served.waiting.clear()
        if failed:  # destroyed at once, its DDS writer would drop responses not yet delivered (seen under load)
            self.loop.call_later(RETIRE_S, self.node.destroy_service, served.server)
        else:
            self.node.destroy_service(served.server)

    def share_names(self, names: ServedNames, ours: Callable[[str, str], bool]) -> None:
        """Claim served names in `names` too (the workers of a cluster share them, and `ours` tells their nodes)."""
        self._registry.names = names
        self._ours = ours

    def served_services(self) -> dict[str, Any]:
        return self._registry.owners()

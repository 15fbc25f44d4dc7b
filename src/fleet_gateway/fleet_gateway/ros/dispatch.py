"""Between the sessions and the ROS side, both ways. One table applies a session's protocol events to the ROS
endpoints (event type -> handler; adding an event means adding a row), with, for the events that can meet an
`EndpointConflict`, how the session forgets what it recorded and which request id the client's error carries.
The other way, ROS requests to client-served services and actions are forwarded to the session that serves them."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from fleet_gateway.protocol import events as ev
from fleet_gateway.protocol.published import PublishedMessage
from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.protocol.state import ABORTED
from fleet_gateway.ros.endpoints import RosEndpoints
from fleet_gateway.ros.graph import EndpointConflict

log = logging.getLogger('fleet_gateway.server')


class Client(Protocol):
    """A client connection as the dispatcher uses it (`transport.connection.ClientConnection`)."""

    session: ClientSession

    def flush(self) -> None: ...

    def schedule_wake(self) -> None: ...


Handler = Callable[[Any, Any], None]
"""(connection, event) -> None."""


def _why_gone(session: ClientSession) -> str:
    return f'the serving client {"disconnected" if session.finished else "unadvertised it"}'


class EventDispatcher:
    """Applies events for one gateway; `internal_error()` counts a gateway bug."""

    def __init__(
        self,
        ros: RosEndpoints,
        loop: asyncio.AbstractEventLoop,
        *,
        internal_error: Callable[[], None],
    ) -> None:
        self.ros = ros
        self.loop = loop
        self.internal_error = internal_error
        # rows look their endpoint up when applied (a test's stand-in endpoints have no attributes until asked)
        self.table: dict[type, Handler] = {
            ev.PublishMessage: lambda conn, e: ros.topics.publish(e.topic, e.msg),
            ev.SubscribeTopic: self._subscribe,
            ev.UnsubscribeTopic: lambda conn, e: ros.topics.unsubscribe(e.topic, conn),
            ev.AdvertiseTopic: lambda conn, e: ros.topics.advertise(e.topic, e.msg_cls, latch=e.latch),
            ev.UnadvertiseTopic: lambda conn, e: ros.topics.unadvertise(e.topic),
            ev.CallService: lambda conn, e: ros.calls.start(conn, e),  # noqa: PLW0108
            ev.ServiceReply: lambda conn, e: ros.services.reply(e.service, e.token, e.response, e.error),
            ev.AdvertiseService: lambda conn, e: ros.services.advertise(e.service, e.srv_cls, conn),
            ev.UnadvertiseService: lambda conn, e: ros.services.unadvertise(e.service, conn, _why_gone(conn.session)),
            ev.SendActionGoal: lambda conn, e: ros.goals.send(conn, e),  # noqa: PLW0108
            ev.CancelActionGoal: lambda conn, e: ros.goals.cancel(conn, e),  # noqa: PLW0108
            ev.AdvertiseAction: lambda conn, e: ros.actions.advertise(e.action, e.action_cls, conn),
            ev.UnadvertiseAction: lambda conn, e: ros.actions.unadvertise(e.action, conn, _why_gone(conn.session)),
            ev.ServedGoalFeedback: lambda conn, e: ros.actions.feedback(e.action, e.token, e.feedback),
            ev.ServedGoalResult: lambda conn, e: ros.actions.finish(e.action, e.token, e.status, e.result, e.error),
            ev.CloseConnection: lambda conn, e: conn.session.request_close(e.code, e.reason),
        }
        ros.services.on_request = self._service_request
        ros.actions.on_goal_request = self._goal_request
        ros.actions.on_goal_cancel = self._goal_cancel

    # --- sessions -> ROS -----------------------------------------------------------------------------------

    def apply_all(self, conn: Any, events: list[ev.Event]) -> None:
        """Apply a session's events, one failure never stopping the rest: a refused endpoint is undone in the
        session and reported to the client (`conflict`), anything else is a gateway bug, logged and reported."""
        session = conn.session
        for event in events:
            try:
                self.apply(conn, event)
            except EndpointConflict as exc:
                text, rid = self.conflict(session, event, exc)
                session.error(text, rid)
            except Exception:  # a bug or an rclpy failure must not take the gateway down: log it, tell the client
                self.internal_error()
                log.exception('client %s: failed to apply %s', session.client_id, type(event).__name__)
                session.error(f'internal error applying {type(event).__name__}; see the gateway log', None)

    def apply(self, conn: Any, event: ev.Event) -> None:
        """Apply one event; raises EndpointConflict (see `conflict`) or whatever the ROS side raises."""
        handler = self.table.get(type(event))
        if handler is None:
            raise TypeError(f'no handler for {type(event).__name__}')
        handler(conn, event)

    def _subscribe(self, conn: Any, event: ev.SubscribeTopic) -> None:
        session = conn.session
        replay, warning = self.ros.topics.subscribe(event.topic, event.msg_cls, conn)
        if warning is not None:
            session.status('warning', warning, event.request_id)
        if replay:  # a latched topic's last samples, at once (the shared subscription got them only once)
            session.deliver_batch(event.topic, replay, self.loop.time())

    @staticmethod
    def conflict(session: ClientSession, event: ev.Event, exc: EndpointConflict) -> tuple[str, Any]:
        """Undo what the session recorded for an event the ROS side refused; returns (error text, request id)."""
        undo = _UNDO.get(type(event))
        if undo is None:
            return str(exc), None
        return undo(session, event, exc)

    # --- ROS -> sessions -----------------------------------------------------------------------------------

    def _service_request(self, conn: Client, service: str, token: int, request: Any) -> None:
        """A ROS caller called a service `conn` serves: forward it to the client (or fail it at once)."""
        failed = ev.ServiceReply(service, token, None, 'internal error in the gateway')
        forward = functools.partial(conn.session.service_request, service, token, request)
        self._forward(conn, f'a call to {service}', forward, failed)

    def _goal_request(self, conn: Client, action: str, token: int, goal: Any) -> None:
        """A ROS goal to an action `conn` serves: forward it to the client (or abort it at once)."""
        failed = ev.ServedGoalResult(action, token, ABORTED, None, 'internal error in the gateway')
        forward = functools.partial(conn.session.goal_request, action, token, goal)
        self._forward(conn, f'a goal to {action}', forward, failed)

    def _goal_cancel(self, conn: Client, action: str, token: int) -> None:
        conn.session.goal_cancel_request(action, token)
        conn.flush()

    def fan_out(self, batch: list[PublishedMessage]) -> set[Any]:
        """ROS messages (oldest first) to the sessions subscribed to their topics, one batch per topic; what was
        past its staleness bound before the fan-out is counted once per session and not delivered. Returns the
        connections whose sessions got anything (to be flushed)."""
        now = self.loop.time()
        dirty: set[Any] = set()
        by_topic: dict[str, list[PublishedMessage]] = {}
        for published in batch:
            by_topic.setdefault(published.topic, []).append(published)
        mono = time.monotonic()
        for topic, arrived in by_topic.items():
            conns = self.ros.topics.subscribers(topic)
            messages = arrived
            oldest = arrived[0].expires
            if oldest is not None and oldest < mono:
                fresh = next((i for i, m in enumerate(arrived) if m.expires is not None and m.expires >= mono), None)
                stale = len(arrived) if fresh is None else fresh
                messages = arrived[stale:]  # stale before the fan-out (the loop fell behind): counted once each
                for conn in conns:
                    conn.session.note_stale(topic, stale, now)
                if not messages:
                    dirty.update(conns)
                    continue
            for conn in conns:
                try:
                    conn.session.deliver_batch(topic, messages, now)
                except Exception:  # a bug in one client's delivery must not stop the fan-out to the others
                    self.internal_error()
                    log.exception('client %s: delivery on %s failed', conn.session.client_id, topic)
                    conn.session.request_close(1011, 'internal error delivering a message')
            dirty.update(conns)
        return dirty

    def _forward(self, conn: Client, what: str, forward: Callable[[], list[ev.Event]], failed: ev.Event) -> None:
        """Forward a ROS request to the client that serves it; `failed` answers the ROS side on a gateway bug."""
        try:
            events = forward()
        except Exception:  # never leave the ROS caller hanging on a bug here
            self.internal_error()
            log.exception('client %s: forwarding %s failed', conn.session.client_id, what)
            events = [failed]
        if events:
            self.apply_all(conn, events)
        conn.flush()
        conn.schedule_wake()


def _undo_subscribe(session: ClientSession, event: Any, exc: EndpointConflict) -> tuple[str, Any]:
    session.topics.refused_subscription(event.topic)
    return str(exc), None


def _undo_advertise(session: ClientSession, event: Any, exc: EndpointConflict) -> tuple[str, Any]:
    session.topics.refused_advertisement(event.topic)
    return str(exc), None


def _undo_advertise_service(session: ClientSession, event: Any, exc: EndpointConflict) -> tuple[str, Any]:
    session.services.refused(event.service)
    return f'advertise_service: {exc}', event.request_id


def _undo_advertise_action(session: ClientSession, event: Any, exc: EndpointConflict) -> tuple[str, Any]:
    session.actions.refused(event.action)
    return f'advertise_action: {exc}', event.request_id


_UNDO: dict[type, Callable[[ClientSession, Any, EndpointConflict], tuple[str, Any]]] = {
    ev.SubscribeTopic: _undo_subscribe,
    ev.AdvertiseTopic: _undo_advertise,
    ev.AdvertiseService: _undo_advertise_service,
    ev.AdvertiseAction: _undo_advertise_action,
}
"""For the events that can meet an `EndpointConflict`: how the session forgets what it recorded, and what the client
is told (error text, request id)."""

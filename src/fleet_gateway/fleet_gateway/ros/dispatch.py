"""One table that applies a session's protocol events to the ROS side: event type -> handler, and for the events that
can meet an `EndpointConflict`, how the session is rolled back and which request id the client's error carries.
(Replaces a 16-branch isinstance chain in the server; adding an event means adding a row here.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fleet_gateway.protocol import events as ev
from fleet_gateway.ros_side import EndpointConflict, RosEndpoints

if TYPE_CHECKING:
    import asyncio

    from fleet_gateway.action_goals import ActionGoalRunner
    from fleet_gateway.protocol.session import ClientSession
    from fleet_gateway.served_actions import ClientServedActions

Handler = Callable[[Any, Any], None]
"""(connection, event) -> None; the connection has `.session`."""


def _why_gone(session: ClientSession) -> str:
    return f'the serving client {"disconnected" if session.finished else "unadvertised it"}'


class EventDispatcher:
    """Applies events for one gateway. `goal_runner`/`action_servers` create those helpers on first use;
    `start_call(conn, event)` starts a service call (it awaits the answer in a task of its own)."""

    def __init__(
        self,
        ros: RosEndpoints,
        loop: asyncio.AbstractEventLoop,
        *,
        goal_runner: Callable[[], ActionGoalRunner],
        action_servers: Callable[[], ClientServedActions],
        start_call: Callable[[Any, ev.CallService], None],
    ) -> None:
        self.ros = ros
        self.loop = loop
        self.goal_runner = goal_runner
        self.action_servers = action_servers
        self.table: dict[type, Handler] = {
            ev.PublishMessage: lambda conn, e: ros.publish(e.topic, e.msg),
            ev.SubscribeTopic: self._subscribe,
            ev.UnsubscribeTopic: lambda conn, e: ros.unsubscribe(e.topic, conn),
            ev.AdvertiseTopic: lambda conn, e: ros.advertise(e.topic, e.msg_cls, latch=e.latch),
            ev.UnadvertiseTopic: lambda conn, e: ros.unadvertise(e.topic),
            ev.CallService: start_call,
            ev.ServiceReply: lambda conn, e: ros.reply(e.service, e.token, e.response, e.error),
            ev.AdvertiseService: lambda conn, e: ros.advertise_service(e.service, e.srv_cls, conn),
            ev.UnadvertiseService: lambda conn, e: ros.unadvertise_service(e.service, conn, _why_gone(conn.session)),
            ev.SendActionGoal: lambda conn, e: goal_runner().send(conn, e),
            ev.CancelActionGoal: lambda conn, e: goal_runner().cancel(conn, e),
            ev.AdvertiseAction: lambda conn, e: action_servers().advertise(e.action, e.action_cls, conn),
            ev.UnadvertiseAction: lambda conn, e: action_servers().unadvertise(e.action, conn, _why_gone(conn.session)),
            ev.ServedGoalFeedback: lambda conn, e: action_servers().feedback(e.action, e.token, e.feedback),
            ev.ServedGoalResult: lambda conn, e: action_servers().finish(
                e.action, e.token, e.status, e.result, e.error
            ),
            ev.CloseConnection: lambda conn, e: conn.session.request_close(e.code, e.reason),
        }

    def apply(self, conn: Any, event: ev.Event) -> None:
        """Apply one event; raises EndpointConflict (see `conflict`) or whatever the ROS side raises."""
        handler = self.table.get(type(event))
        if handler is None:
            raise TypeError(f'no handler for {type(event).__name__}')
        handler(conn, event)

    def _subscribe(self, conn: Any, event: ev.SubscribeTopic) -> None:
        session = conn.session
        replay, warning = self.ros.subscribe(event.topic, event.msg_cls, conn)
        if warning is not None:
            session.status('warning', warning, event.request_id)
        if replay:  # a latched topic's last samples, at once (the shared subscription got them only once)
            session.deliver_batch(event.topic, replay, self.loop.time())

    @staticmethod
    def conflict(session: ClientSession, event: ev.Event, exc: EndpointConflict) -> tuple[str, Any]:
        """Undo what the session recorded for an event the ROS side refused; returns (error text, request id)."""
        if isinstance(event, ev.SubscribeTopic):
            session.subscriptions.pop(event.topic, None)
        elif isinstance(event, ev.AdvertiseTopic):
            session.advertisements.pop(event.topic, None)
        elif isinstance(event, ev.AdvertiseService):
            session.served.pop(event.service, None)
            return f'advertise_service: {exc}', event.request_id
        elif isinstance(event, ev.AdvertiseAction):
            session.served_actions.pop(event.action, None)
            return f'advertise_action: {exc}', event.request_id
        return str(exc), None

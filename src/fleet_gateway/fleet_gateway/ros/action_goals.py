"""Action goals sent by WebSocket clients (send_action_goal), followed from the asyncio thread: wait for the action
server, send the goal on the node's shared ActionClient, relay feedback, fetch the result, and cancel on request
or when the client disconnects. The session (sans-I/O) turns what happens into protocol messages."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from action_msgs.msg import GoalStatus
from action_msgs.srv import CancelGoal
from rclpy.action import ActionClient
from rclpy.node import Node

from fleet_gateway.protocol.events import CancelActionGoal, SendActionGoal
from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.ros.asyncio_bridge import asyncio_future, wait_until
from fleet_ros import qos as fleet_qos

log = logging.getLogger('fleet_gateway.actions')


class SerializedActionClient(ActionClient):
    """An rclpy ActionClient whose requests are sent from one thread (asyncio) while the spin thread handles the
    responses. rclpy 7.1's ActionClient has no lock: it sends a request, then registers the future for its
    response, and the spin thread drops a response that comes in between as unexpected (the goal, cancel or result
    would never be answered). Sending and handling are serialised here, as rclpy's service Client does with its own
    lock. Reentrant: a future's done callback may send a cancel from inside `execute`."""

    # The base calls name ActionClient, not super(): mypy's untyped_calls_exclude does not see through super().

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ActionClient.__init__(self, *args, **kwargs)
        self._send_lock = threading.RLock()

    if TYPE_CHECKING:

        def server_is_ready(self) -> bool: ...

    def send_goal_async(self, goal: Any, feedback_callback: Any = None, goal_uuid: Any = None) -> Any:
        with self._send_lock:
            return ActionClient.send_goal_async(self, goal, feedback_callback=feedback_callback, goal_uuid=goal_uuid)

    def _cancel_goal_async(self, goal_handle: Any) -> Any:
        with self._send_lock:
            return ActionClient._cancel_goal_async(self, goal_handle)

    def _get_result_async(self, goal_handle: Any) -> Any:
        with self._send_lock:
            return ActionClient._get_result_async(self, goal_handle)

    async def execute(self, taken_data: Any) -> None:
        # The base coroutine never suspends here: its only await runs the (plain function) feedback callback.
        with self._send_lock:
            await ActionClient.execute(self, taken_data)


class GoalOwner(Protocol):
    """The connection a goal belongs to (`server.ClientConnection`)."""

    session: ClientSession

    def flush(self) -> None: ...


@dataclass(eq=False)
class _Goal:
    owner: GoalOwner
    event: SendActionGoal
    request_id: str | int | None
    handle: Any = None
    """rclpy's ClientGoalHandle once the server accepted the goal."""
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None

    def describe(self) -> str:
        shown = f' {self.request_id!r}' if self.request_id is not None else ''
        return f'client {self.owner.session.client_id} goal{shown} to {self.event.action}'


def _cancel_requested(goal: _Goal) -> bool:
    """Read anew after an await: another task sets it meanwhile (mypy keeps an attribute's narrowing across awaits)."""
    return goal.cancel_requested


def _finished(session: ClientSession) -> bool:
    """As `_cancel_requested`, for the session."""
    return session.finished


class ActionGoalRunner:
    """Every goal in flight, keyed by (owner, goal number). Lives in the asyncio thread; rclpy callbacks only
    hand over with `call_soon_threadsafe`."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop
        self._clients: dict[tuple[str, type], SerializedActionClient] = {}
        self._goals: dict[tuple[GoalOwner, int], _Goal] = {}
        self.counters = {'sent': 0, 'accepted': 0, 'rejected': 0, 'unavailable': 0, 'finished': 0, 'cancels': 0}
        """Goals sent to action servers, accepted, rejected, failed for want of a server, finished with a result;
        cancel requests sent."""

    def action_client(self, action: str, action_cls: type) -> SerializedActionClient:
        """The node's client of `action`, shared by every WebSocket client that sends goals to it."""
        key = (action, action_cls)
        client = self._clients.get(key)
        if client is None:
            calls = fleet_qos.SERVICE_CALLS  # goal, cancel and result requests: deep queues, like service calls
            client = self._clients[key] = SerializedActionClient(
                self.node,
                action_cls,
                action,
                goal_service_qos_profile=calls,
                result_service_qos_profile=calls,
                cancel_service_qos_profile=calls,
            )
        return client

    def in_flight(self) -> int:
        return len(self._goals)

    def send(self, owner: GoalOwner, event: SendActionGoal) -> None:
        active = owner.session.goals.get(event.goal_no)
        goal = _Goal(owner, event, active.request_id if active is not None else None)
        self._goals[(owner, event.goal_no)] = goal
        goal.task = self.loop.create_task(self._follow(goal))

    def cancel(self, owner: GoalOwner, event: CancelActionGoal) -> None:
        """The client asked to cancel, or disconnected (its session is finished): then the goal is cancelled and
        no longer followed."""
        goal = self._goals.get((owner, event.goal_no))
        if goal is None:
            return
        if not goal.cancel_requested:
            goal.cancel_requested = True
            if goal.handle is not None:
                self._request_cancel(goal)
            # else: cancelled as soon as the server accepts it (`_follow`)
        if owner.session.finished and goal.handle is not None and goal.task is not None:
            goal.task.cancel()  # nobody is left to tell the result

    async def _follow(self, goal: _Goal) -> None:
        event = goal.event
        session = goal.owner.session
        wait_s = event.server_wait_s
        try:
            client = self.action_client(event.action, event.action_cls)

            def ready_or_unwanted() -> bool:
                return goal.cancel_requested or session.finished or client.server_is_ready()

            if not await wait_until(ready_or_unwanted, wait_s):
                self.counters['unavailable'] += 1
                self._fail(goal, f'action server {event.action} is not available (waited {wait_s:g} s)')
                return
            if session.finished:
                return
            if goal.cancel_requested:  # cancelled before it was sent: it never runs
                session.action_result(event.goal_no, GoalStatus.STATUS_CANCELED, event.action_cls.Result())  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
                goal.owner.flush()
                return
            relay = self._feedback_relay(goal) if event.feedback else None
            sent = client.send_goal_async(event.goal, feedback_callback=relay)
            self.counters['sent'] += 1
            try:
                handle = await asyncio.wait_for(asyncio_future(self.loop, sent), wait_s)
            except TimeoutError:
                sent.add_done_callback(_cancel_if_accepted)  # a late acceptance must not leave it running
                self.counters['unavailable'] += 1
                self._fail(goal, f'action server {event.action} did not answer the goal within {wait_s:g} s')
                return
            if not handle.accepted:
                self.counters['rejected'] += 1
                self._fail(goal, f'the action server of {event.action} rejected the goal')
                return
            self.counters['accepted'] += 1
            goal.handle = handle
            if _cancel_requested(goal):
                self._request_cancel(goal)
            if _finished(session):
                return
            response = await asyncio_future(self.loop, handle.get_result_async())
            self.counters['finished'] += 1
            session.action_result(event.goal_no, response.status, response.result)
            goal.owner.flush()
        except asyncio.CancelledError:
            log.debug('%s: no longer followed (the client disconnected)', goal.describe())
        except Exception as exc:  # an rclpy failure ends this goal for the client, never the gateway
            log.warning('%s failed in the gateway: %s', goal.describe(), exc, exc_info=True)
            self._fail(goal, f'the gateway could not follow the goal: {exc}')
        finally:
            self._goals.pop((goal.owner, event.goal_no), None)

    def _fail(self, goal: _Goal, why: str) -> None:
        log.info('%s failed: %s', goal.describe(), why)
        goal.owner.session.action_result(goal.event.goal_no, GoalStatus.STATUS_UNKNOWN, None, why)
        goal.owner.flush()

    def _feedback_relay(self, goal: _Goal) -> Any:
        loop = self.loop

        def relay(feedback_message: Any) -> None:  # spin thread
            try:
                loop.call_soon_threadsafe(self._feedback, goal, feedback_message.feedback)
            except RuntimeError:  # the loop closed during shutdown
                log.debug('dropping feedback for %s: the event loop is closed', goal.event.action)

        return relay

    def _feedback(self, goal: _Goal, feedback: Any) -> None:
        goal.owner.session.action_feedback(goal.event.goal_no, feedback)
        goal.owner.flush()

    def _request_cancel(self, goal: _Goal) -> None:
        self.counters['cancels'] += 1
        answer = asyncio_future(self.loop, goal.handle.cancel_goal_async())
        answer.add_done_callback(lambda done: self._cancel_answered(goal, done))

    def _cancel_answered(self, goal: _Goal, done: asyncio.Future[Any]) -> None:
        session = goal.owner.session
        if session.finished or goal.event.goal_no not in session.goals:
            return  # gone, or its result went out already
        if done.cancelled() or done.exception() is not None:
            why = 'no answer' if done.cancelled() else str(done.exception())
        elif done.result().return_code != CancelGoal.Response.ERROR_NONE:
            why = f'return code {done.result().return_code}'
        else:
            return  # accepted: the action_result (usually status CANCELED) follows
        session.status(
            'warning',
            f'cancel_action_goal: the action server of {goal.event.action} refused to cancel the goal ({why})',
            goal.request_id,
        )
        goal.owner.flush()


def _cancel_if_accepted(sent: Any) -> None:
    """Spin thread: the answer to a goal the gateway stopped waiting for; cancel it if it was accepted."""
    if sent.exception() is None and sent.result() is not None and sent.result().accepted:
        sent.result().cancel_goal_async()

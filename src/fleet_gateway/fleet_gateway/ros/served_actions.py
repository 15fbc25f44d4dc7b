"""ROS action servers run by the gateway for WebSocket clients that serve actions (advertise_action), on the
`ServedRegistry` mechanism it shares with served services.

Each ROS goal's execute callback is a coroutine in the spin thread that awaits an rclpy `Future`; the goal is handed
to the asyncio thread (forwarded to the client as `send_action_goal`) and the future is completed from there when
the client's `action_result` arrives, it times out, or the action is unadvertised. The EventsExecutor (rclpy 7.1)
resumes a task awaiting an rclpy Future completed from another thread, so no executor thread ever blocks. The
terminal state (succeed / canceled / abort) is set in the spin thread, after the await; feedback is published from
the asyncio thread (`ServerGoalHandle.publish_feedback` takes the goal handle's lock)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from action_msgs.msg import GoalStatus
from rclpy.action import ActionServer, CancelResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.node import Node
from rclpy.task import Future

from fleet_gateway.ros import graph
from fleet_gateway.ros.served import ServedEndpoint, ServedRegistry
from fleet_gateway.transport.shared import ServedNames
from fleet_ros import qos as fleet_qos

log = logging.getLogger('fleet_gateway.served_actions')

RETIRE_S = 1.0
"""How long an unadvertised action server outlives its last goal: after an execute callback returns, the spin
thread still sends the goal's result to the ROS client; destroying the server before that would lose it."""

OnGoalRequest = Callable[[Any, str, int, Any], None]
"""(owner, action, token, goal), called in the asyncio thread for each ROS goal to a client-served action."""
OnGoalCancel = Callable[[Any, str, int], None]
"""(owner, action, token), called in the asyncio thread when a ROS client asks to cancel a forwarded goal."""


@dataclass(eq=False)
class _Goal:
    handle: ServerGoalHandle
    outcome: Future
    """Completed (asyncio thread) with (GoalStatus code, Result or None); the execute coroutine awaits it."""


@dataclass(eq=False)
class _ActionState:
    running: int = 0
    """Execute callbacks that handed their goal over and have not returned yet."""
    retired: bool = False


class _ServedAction(ServedEndpoint[_Goal]):
    """A served action; `waiting` holds the goals forwarded to its client and not yet ended, by token."""

    def __init__(self, action: str, action_cls: type, owner: Any) -> None:
        super().__init__(action, action_cls, owner)
        self.state = _ActionState()


class ClientServedActions:
    """The action servers of one gateway node, one per client-served action. Owned by the asyncio thread; the
    rclpy callbacks (spin thread) only hand over with `call_soon_threadsafe`."""

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop
        self._ours = graph.cluster_nodes(node, None)
        self._registry: ServedRegistry[_Goal] = ServedRegistry(
            'action', lambda action: graph.served_elsewhere(node, f'{action}/_action/send_goal', self._ours)
        )
        self.on_goal_request: OnGoalRequest | None = None
        self.on_goal_cancel: OnGoalCancel | None = None
        self.counters = {'forwarded': 0, 'succeeded': 0, 'canceled': 0, 'aborted': 0, 'cancel_requests': 0}

    def advertise(self, action: str, action_cls: type, owner: Any) -> None:
        """Serve `action` in ROS for `owner`. Raises EndpointConflict when anyone else serves it already."""
        if self._registry.claim(action, action_cls, owner):
            return
        served = _ServedAction(action, action_cls, owner)
        calls = fleet_qos.SERVICE_CALLS  # goal, cancel and result requests: deep queues, like served services
        try:
            served.server = ActionServer(
                self.node,
                action_cls,
                action,
                execute_callback=functools.partial(self._execute, served),
                cancel_callback=functools.partial(self._cancel_requested, served),
                goal_service_qos_profile=calls,
                result_service_qos_profile=calls,
                cancel_service_qos_profile=calls,
            )
        except Exception:
            self._registry.abandon(action, owner)
            raise
        self._registry.add(served)

    def unadvertise(self, action: str, owner: Any, why: str) -> None:
        """Stop serving `action`: every goal in flight is aborted now; the server goes once their callbacks end."""
        served = self._registry.release(action, owner)
        if not isinstance(served, _ServedAction):
            return
        for token in list(served.waiting):
            self._end(served, token, GoalStatus.STATUS_ABORTED, None, f'{action}: {why}')
        if served.state.running == 0:
            self._retire(served)

    def feedback(self, action: str, token: int, feedback: Any) -> None:
        served = self._registry.get(action)
        goal = served.waiting.get(token) if served is not None else None
        if goal is not None and goal.handle.is_active:
            goal.handle.publish_feedback(feedback)

    def finish(self, action: str, token: int, status: int, result: Any | None, error: str | None = None) -> None:
        """End one forwarded goal with `status` (SUCCEEDED, CANCELED; anything else aborts); unknown tokens are
        ignored (the action was unadvertised meanwhile and the goal aborted then)."""
        served = self._registry.get(action)
        if isinstance(served, _ServedAction) and token in served.waiting:
            self._end(served, token, status, result, error)

    def share_names(self, names: ServedNames, ours: Callable[[str, str], bool]) -> None:
        """Claim served names in `names` too (the workers of a cluster share them, and `ours` tells their nodes)."""
        self._registry.names = names
        self._ours = ours

    def served_actions(self) -> dict[str, Any]:
        return self._registry.owners()

    # --- spin thread -------------------------------------------------------------------------------------

    async def _execute(self, served: _ServedAction, handle: ServerGoalHandle) -> Any:
        outcome = Future()
        token = self._registry.new_token()
        if not self._hand_over(self._goal_arrived, served, token, handle, outcome):
            outcome.set_result((GoalStatus.STATUS_ABORTED, None))
        status, result = await outcome
        if status == GoalStatus.STATUS_SUCCEEDED:
            handle.succeed()
        elif status == GoalStatus.STATUS_CANCELED and handle.is_cancel_requested:
            handle.canceled()
        else:  # a client reporting CANCELED for a goal nobody asked to cancel ends it as aborted
            handle.abort()
        self._hand_over(self._goal_ended, served)
        return result if result is not None else served.cls.Result()  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import

    def _cancel_requested(self, served: _ServedAction, handle: ServerGoalHandle) -> CancelResponse:
        # Accepted: the client decides how the goal ends (its action_result, usually status CANCELED).
        self._hand_over(self._forward_cancel, served, handle)
        return CancelResponse.ACCEPT

    def _hand_over(self, callback: Callable[..., None], *args: Any) -> bool:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop closed during shutdown: nobody is left to serve the goal
            log.debug('dropping a goal event: the event loop is closed')
            return False
        return True

    # --- asyncio thread ------------------------------------------------------------------------------------

    def _goal_arrived(self, served: _ServedAction, token: int, handle: ServerGoalHandle, outcome: Future) -> None:
        served.state.running += 1
        served.waiting[token] = _Goal(handle, outcome)
        self.counters['forwarded'] += 1
        if served.closed or self.on_goal_request is None:
            self._end(served, token, GoalStatus.STATUS_ABORTED, None, f'{served.name} is no longer served')
            return
        self.on_goal_request(served.owner, served.name, token, handle.request)
        if handle.is_cancel_requested:  # cancelled before it reached the client
            self._forward_cancel(served, handle)

    def _goal_ended(self, served: _ServedAction) -> None:
        served.state.running -= 1
        if served.closed and served.state.running == 0:
            self._retire(served)

    def _forward_cancel(self, served: _ServedAction, handle: ServerGoalHandle) -> None:
        for token, goal in served.waiting.items():
            if goal.handle == handle:
                self.counters['cancel_requests'] += 1
                if self.on_goal_cancel is not None and not served.closed:
                    self.on_goal_cancel(served.owner, served.name, token)
                return

    def _end(self, served: _ServedAction, token: int, status: int, result: Any | None, error: str | None) -> None:
        goal = served.waiting.pop(token)
        kind = {GoalStatus.STATUS_SUCCEEDED: 'succeeded', GoalStatus.STATUS_CANCELED: 'canceled'}.get(status, 'aborted')
        self.counters[kind] += 1
        if error is not None:
            log.info('goal %d to %s aborted: %s', token, served.name, error)
        if not goal.outcome.done():
            goal.outcome.set_result((status, result))

    def _retire(self, served: _ServedAction) -> None:
        if served.state.retired:
            return
        served.state.retired = True
        self.loop.call_later(RETIRE_S, self._destroy, served)

    def _destroy(self, served: _ServedAction) -> None:
        executor = self.node.executor
        if executor is None:
            served.server.destroy()
            return
        executor.create_task(served.server.destroy)  # in the spin thread, between its callbacks

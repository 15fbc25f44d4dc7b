"""The action-goal capability: `send_action_goal` / `cancel_action_goal` to ROS action servers, and the
`action_feedback` / `action_result` the client gets back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fleet_gateway.acl import Action
from fleet_gateway.conversion import action_class, codec_for
from fleet_gateway.protocol import fields
from fleet_gateway.protocol.events import CancelActionGoal, Event, SendActionGoal
from fleet_gateway.protocol.fields import ProtocolError, Rid
from fleet_gateway.protocol.port import SessionPort


@dataclass
class ActiveGoal:
    """An action goal this client sent (send_action_goal) whose `action_result` has not gone out yet."""

    goal_no: int
    request_id: str | int | None
    action: str
    action_cls: type
    feedback: bool
    fragment_size: int = 0
    encoding: str = 'none'
    cancel_requested: bool = False


class ActionGoals:
    """The goals in flight by session-local goal number, and by the send_action_goal id that cancels them."""

    def __init__(self, port: SessionPort) -> None:
        self._port = port
        self._goals: dict[int, ActiveGoal] = {}
        self._by_id: dict[str | int, int] = {}
        """Goal numbers by the send_action_goal id (goals sent without an id cannot be cancelled)."""
        self.goals: Mapping[int, ActiveGoal] = MappingProxyType(self._goals)
        self.goal_ids: Mapping[str | int, int] = MappingProxyType(self._by_id)

    def handle_send_action_goal(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        port = self._port
        action = fields.ros_name(message, 'action')
        port.allow(Action.SEND_ACTION_GOAL, action)
        action_cls = action_class(fields.text(message, 'action_type'))
        feedback = message.get('feedback', False)
        if feedback is None:
            feedback = False
        if not isinstance(feedback, bool):
            raise ProtocolError(f'field "feedback" must be true or false, got {type(feedback).__name__}')
        fragment_size, encoding = fields.delivery_options(message)
        limits = port.limits
        if len(self._goals) >= limits.max_action_goals:
            raise ProtocolError(f'at most {limits.max_action_goals} action goals in flight per client')
        if rid is not None and rid in self._by_id:
            raise ProtocolError(f'a goal with id {rid!r} is still in flight: give each goal an id of its own')
        # like call_service: no args, or an empty list, is an all-default goal
        goal = codec_for(action_cls.Goal).from_json(fields.values_of(message, 'args'))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        codec_for(action_cls.Feedback)  # type: ignore[attr-defined]  # fails now, not when the first one arrives
        codec_for(action_cls.Result)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        goal_no = port.new_id()
        self._goals[goal_no] = ActiveGoal(goal_no, rid, action, action_cls, feedback, fragment_size, encoding)
        if rid is not None:
            self._by_id[rid] = goal_no
        port.count('action_goals')
        events.append(SendActionGoal(goal_no, action, action_cls, goal, feedback, limits.action_server_wait_s))

    def handle_cancel_action_goal(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        if rid is None:
            raise ProtocolError('a cancel_action_goal needs the "id" of the send_action_goal it cancels')
        action = fields.ros_name(message, 'action')
        goal_no = self._by_id.get(rid)
        goal = self._goals.get(goal_no) if goal_no is not None else None
        if goal is None:
            raise ProtocolError(f'no goal with id {rid!r} is in flight (unknown, or its action_result was sent)')
        if goal.action != action:
            raise ProtocolError(f'goal {rid!r} was sent to {goal.action}, not {action}')
        if goal.cancel_requested:
            return  # asked already; the action_result tells how it ended
        goal.cancel_requested = True
        events.append(CancelActionGoal(goal.goal_no, action))

    def feedback(self, goal_no: int, feedback: Any) -> None:
        """Feedback (the action's Feedback message) for a goal sent with `"feedback": true`. Sent in the lane that
        is never dropped, like the result, so that a goal's feedback never arrives after its result."""
        goal = self._goals.get(goal_no)
        if goal is None or not goal.feedback or self._port.closing:
            return
        values = codec_for(goal.action_cls.Feedback).to_json(feedback)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        message: dict[str, Any] = {'op': 'action_feedback', 'action': goal.action, 'values': values}
        if goal.request_id is not None:
            message['id'] = goal.request_id
        self._port.send_encoded(message, fragment_size=goal.fragment_size, encoding=goal.encoding)

    def result(self, goal_no: int, status: int, result: Any | None, error: str | None = None) -> None:
        """How a goal ended: `result` (the action's Result message) with its GoalStatus code, or, when the goal
        never ran (no action server, rejected, gateway failure), `error`: the client gets a status error carrying
        the goal id and an `action_result` with `result: false` and the reason as `values`. Once per goal."""
        port = self._port
        goal = self._goals.pop(goal_no, None)
        if goal is None or port.finished:
            return
        if goal.request_id is not None:
            self._by_id.pop(goal.request_id, None)
        message: dict[str, Any] = {'op': 'action_result', 'action': goal.action}
        if goal.request_id is not None:
            message['id'] = goal.request_id
        if error is None and result is not None:
            message['values'] = codec_for(goal.action_cls.Result).to_json(result)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
            message['status'] = status
            message['result'] = True
        else:
            port.count('action_goals_failed')
            why = error or f'goal to {goal.action} failed'
            port.error(f'send_action_goal: {why}', goal.request_id)
            message['values'] = why
            message['status'] = status
            message['result'] = False
        port.send_encoded(message, fragment_size=goal.fragment_size, encoding=goal.encoding)

    def finish(self) -> list[Event]:
        """Cancel every goal in flight (nobody is left to tell the result)."""
        events: list[Event] = [CancelActionGoal(goal.goal_no, goal.action) for goal in self._goals.values()]
        self._goals.clear()
        self._by_id.clear()
        return events

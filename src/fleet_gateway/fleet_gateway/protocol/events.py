"""What a client session asks the ROS side to do; the server adapter applies these to rclpy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class AdvertiseTopic:
    topic: str
    msg_cls: type
    latch: bool = False


@dataclass(frozen=True, slots=True)
class UnadvertiseTopic:
    topic: str


@dataclass(frozen=True, slots=True)
class PublishMessage:
    """`msg` is a message instance or, for flat types, its serialized CDR bytes (`Publisher.publish` takes both)."""

    topic: str
    msg: Any


@dataclass(frozen=True, slots=True)
class SubscribeTopic:
    topic: str
    msg_cls: type
    request_id: str | int | None = field(default=None, compare=False)
    """The subscribe id, for a status the ROS side reports about it (a QoS that cannot match)."""


@dataclass(frozen=True, slots=True)
class UnsubscribeTopic:
    topic: str


@dataclass(frozen=True, slots=True)
class CallService:
    """`call_no` is session-local; answer with `ClientSession.service_result(call_no, ...)`."""

    call_no: int
    service: str
    srv_cls: type
    request: Any
    timeout_s: float


@dataclass(frozen=True, slots=True)
class AdvertiseService:
    """Serve `service` in ROS on behalf of this client; a conflict is reported with `request_id`."""

    service: str
    srv_cls: type
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class UnadvertiseService:
    """Stop serving `service`; ROS calls still waiting for this client get a failed response."""

    service: str


@dataclass(frozen=True, slots=True)
class ServiceReply:
    """Answer the ROS call `token` (given by `ClientSession.service_request`) on a service this client serves.

    `response` None means failed: the ROS caller gets a default response (with `error` in a `message` field when
    the type has one), since a ROS service has no error channel."""

    service: str
    token: int
    response: Any | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SendActionGoal:
    """Send `goal` to the action server of `action`. `goal_no` is session-local; report back with
    `ClientSession.action_feedback(goal_no, ...)` (only when `feedback`) and `action_result(goal_no, ...)` once."""

    goal_no: int
    action: str
    action_cls: type
    goal: Any
    feedback: bool
    server_wait_s: float


@dataclass(frozen=True, slots=True)
class CancelActionGoal:
    """Ask the action server to cancel goal `goal_no` (sent, maybe not yet accepted); its result still follows."""

    goal_no: int
    action: str


@dataclass(frozen=True, slots=True)
class AdvertiseAction:
    """Serve `action` in ROS on behalf of this client; a conflict is reported with `request_id`."""

    action: str
    action_cls: type
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class UnadvertiseAction:
    """Stop serving `action`: every goal still in flight is aborted at once, then the action server goes."""

    action: str


@dataclass(frozen=True, slots=True)
class ServedGoalFeedback:
    """Publish `feedback` (the action's Feedback) for the ROS goal `token` (from `ClientSession.goal_request`)."""

    action: str
    token: int
    feedback: Any


@dataclass(frozen=True, slots=True)
class ServedGoalResult:
    """End the ROS goal `token`: `status` a GoalStatus code (SUCCEEDED, CANCELED, anything else aborts) with
    `result` (None: a default Result); `error` is logged as the reason for an abort."""

    action: str
    token: int
    status: int
    result: Any | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CloseConnection:
    code: int
    reason: str


Event = (
    AdvertiseTopic
    | UnadvertiseTopic
    | PublishMessage
    | SubscribeTopic
    | UnsubscribeTopic
    | CallService
    | AdvertiseService
    | UnadvertiseService
    | ServiceReply
    | SendActionGoal
    | CancelActionGoal
    | AdvertiseAction
    | UnadvertiseAction
    | ServedGoalFeedback
    | ServedGoalResult
    | CloseConnection
)

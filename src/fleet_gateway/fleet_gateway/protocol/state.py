"""Per-client protocol state records shared by the session and the op handlers."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fleet_gateway.protocol.published import PublishedMessage

STATUS_LEVELS = {'info': 0, 'warning': 1, 'error': 2, 'none': 3}
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013


@dataclass(frozen=True)
class SessionLimits:
    """Per-connection bounds; every one keeps a misbehaving client from growing the gateway's memory."""

    max_message_bytes: int = 1_000_000
    send_queue_frames: int = 1_000
    send_queue_bytes: int = 4_000_000
    critical_queue_bytes: int = 16_000_000
    max_subscriptions: int = 256
    max_publishers: int = 256
    max_pending_calls: int = 64
    call_timeout_s: float = 10.0
    max_served_services: int = 64
    max_served_calls: int = 256
    """ROS calls waiting for this client's `service_response` at once (over all its services); beyond, fail at once."""
    served_call_timeout_s: float = 10.0
    """A ROS call to a client-served service gets a failed response if the client does not answer within this."""
    max_call_timeout_s: float = 120.0
    max_action_goals: int = 64
    """Action goals this client may have in flight (sent, not yet finished) at once; beyond, a status error."""
    action_server_wait_s: float = 5.0
    """How long a goal waits for its action server (and for the server's answer to the goal) before it fails with
    `action_result` result false. The first goal to an action also waits for discovery of the gateway's new client."""
    max_served_actions: int = 64
    max_served_goals: int = 256
    """ROS goals waiting for this client's `action_result` at once (over all its actions); beyond, aborted at once."""
    served_goal_timeout_s: float = 600.0
    """A ROS goal to a client-served action is aborted if the client sends no `action_result` within this."""
    fragment_timeout_s: float = 10.0
    max_fragmented_messages: int = 8
    ops_per_s: float = 20_000.0
    ops_burst: float = 20_000.0
    max_auth_failures: int = 3
    auth_timeout_s: float = 5.0
    """A client that has not authenticated within this after connecting is closed (1008)."""
    drop_report_interval_s: float = 1.0
    status_level: str = 'warning'


@dataclass
class Subscription:
    """A client's subscription to one topic; several subscribe ids may share it (effective options merged)."""

    topic: str
    msg_cls: type
    critical: bool
    options: dict[Any, tuple[float, int, int, str]] = field(default_factory=dict)
    throttle_s: float = 0.0
    queue_length: int = 0
    fragment_size: int = 0
    encoding: str = 'none'
    last_sent: float = -1e18
    last_batch: float = -1e18
    """When the last batch of this topic was delivered (paces a client that is behind, see `backlog_rate`)."""
    pending: deque[PublishedMessage] = field(default_factory=deque)

    def merge(self) -> None:
        values = list(self.options.values())
        self.throttle_s = min(v[0] for v in values)
        self.queue_length = max(v[1] for v in values)
        sizes = [v[2] for v in values if v[2] > 0]
        self.fragment_size = min(sizes) if sizes else 0
        self.encoding = values[-1][3]


@dataclass
class Advertisement:
    topic: str
    msg_cls: type
    ids: set[Any] = field(default_factory=set)
    codec: Any = None
    """The type's `MessageCodec` (conversion.codec_for), looked up once at advertise time."""


@dataclass
class PendingCall:
    request_id: str | int | None
    service: str
    response_cls: type


@dataclass
class ServedService:
    """A service this client serves (advertise_service); the gateway forwards ROS calls to it as call_service."""

    service: str
    srv_cls: type


@dataclass
class IncomingCall:
    """A ROS call forwarded to this client, waiting for its service_response with `call_id`."""

    call_id: str
    service: str
    token: int
    deadline: float


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


@dataclass
class ServedAction:
    """An action this client serves (advertise_action); the gateway forwards ROS goals to it as send_action_goal."""

    action: str
    action_cls: type
    type_name: str = ''
    """The type as the client advertised it; the goals it is sent carry it back as `action_type`."""


@dataclass
class IncomingGoal:
    """A ROS goal forwarded to this client, waiting for its action_result with `goal_id`."""

    goal_id: str
    action: str
    token: int
    deadline: float

"""What every part of a client session shares: its limits, status levels, close codes and GoalStatus codes. (Each
capability keeps its own records in its own module.)"""

from __future__ import annotations

from dataclasses import dataclass

STATUS_LEVELS = {'info': 0, 'warning': 1, 'error': 2, 'none': 3}
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
SUCCEEDED, CANCELED, ABORTED = 4, 5, 6
"""action_msgs/GoalStatus codes a serving client reports in action_result."""


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

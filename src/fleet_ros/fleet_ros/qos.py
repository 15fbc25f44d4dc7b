"""Every QoS profile fleetlanes uses, by name (mirrored in config/qos.yaml and fleet_interfaces/README.md)."""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

COMMAND_DEPTH = 64
"""Per-agent command topic: commands queued for one agent between two executor turns."""

ACK_DEPTH = 4096
"""Shard ack topic: must hold a whole shard's burst (ACCEPTED + final per agent) without overrun."""

EVENT_DEPTH = 1000
"""Outcome, trace and task-event streams."""

HEARTBEAT_LEASE_SEC = 3.0
"""DDS liveliness lease of the heartbeat writer; fleet health itself is decided by fleet_core.health."""

COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=COMMAND_DEPTH,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

ACK = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=ACK_DEPTH,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

EVENTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=EVENT_DEPTH,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

HEARTBEAT = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
    liveliness=LivelinessPolicy.AUTOMATIC,
    liveliness_lease_duration=Duration(seconds=HEARTBEAT_LEASE_SEC),
)

TELEMETRY = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=5,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

VELOCITY_COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""A base's cmd_vel: only the latest command matters, and it must arrive (the zero twist of a halt above all).
Matches the reliable endpoints of ros_gz_bridge and of real base drivers."""

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""Shard status, leader lease and e-stop: late joiners get the last state."""

OPERATIONS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

SERVICE_CALL_DEPTH = 1024
"""Service requests/replies in flight per client or server (the rmw default of 10 loses calls beyond ten)."""

SERVICE_CALLS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=SERVICE_CALL_DEPTH,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""Service clients and servers that may have many calls outstanding at once (e.g. the WebSocket gateway)."""

PROFILES: dict[str, QoSProfile] = {
    'command': COMMAND,
    'ack': ACK,
    'events': EVENTS,
    'heartbeat': HEARTBEAT,
    'telemetry': TELEMETRY,
    'velocity_command': VELOCITY_COMMAND,
    'latched': LATCHED,
    'operations': OPERATIONS,
    'service_calls': SERVICE_CALLS,
}

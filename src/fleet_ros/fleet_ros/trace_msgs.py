"""TraceEvent <-> TraceRecord conversion and the TraceEmitter nodes use to publish sampled hops.

Wiring in a node (the agent host uses it): build one TraceEmitter per shard with the node, the shard and the
TraceSettings from config, then call `emitter.hop(Hop.SUBMIT, command, ...)` at each step. The emitter applies
the TraceSampler (so SAFETY, failures and retries are always kept) and publishes on /fleet/<site>/<shard>/trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.node import Node

from fleet_core import topics
from fleet_core.model import Command, Priority
from fleet_core.trace import Hop, TraceRecord, TraceSampler, TraceSettings
from fleet_interfaces.msg import TraceEvent
from fleet_ros import qos
from fleet_ros.convert import from_time, to_time

_ATTEMPT_HOPS = frozenset({Hop.DELIVER, Hop.RECEIVE, Hop.ACK, Hop.RETRY, Hop.START, Hop.FINISH})
"""Hops that concern one delivery attempt (the agent's START/FINISH: the attempt that started the command)."""


def trace_to_msg(record: TraceRecord) -> TraceEvent:
    return TraceEvent(
        command_id=record.command_id,
        trace_id=record.trace_id,
        agent_id=record.agent_id,
        shard_id=record.shard_id,
        node=record.node,
        hop=int(record.hop),
        attempt=record.attempt,
        status=record.status,
        detail=record.detail,
        stamp=to_time(record.stamp),
    )


def trace_from_msg(msg: TraceEvent) -> TraceRecord:
    """Raises ValueError for an unknown hop value."""
    return TraceRecord(
        command_id=msg.command_id,
        trace_id=msg.trace_id,
        agent_id=msg.agent_id,
        shard_id=msg.shard_id,
        node=msg.node,
        hop=Hop(msg.hop),
        stamp=from_time(msg.stamp),
        attempt=msg.attempt,
        status=msg.status,
        detail=msg.detail,
    )


class TraceEmitter:
    """Publishes the sampled hops of one shard's commands. Call from the node's executor thread."""

    def __init__(
        self,
        node: Node,
        site: str,
        shard: str,
        settings: TraceSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._node_name = node.get_name()
        self._shard = shard
        self._clock = clock
        self.sampler = TraceSampler(settings)
        self._publisher = node.create_publisher(TraceEvent, topics.shard_trace(site, shard), qos.EVENTS)
        self.published = 0

    def emit(self, record: TraceRecord, priority: Priority | None = None) -> int:
        """Offer a ready-made record; returns how many events were published (held hops may go out too)."""
        out = self.sampler.offer(record, priority)
        for item in out:
            self._publisher.publish(trace_to_msg(item))
        self.published += len(out)
        return len(out)

    def hop(self, hop: Hop, command: Command, *, status: str = '', detail: str = '', stamp: float | None = None) -> int:
        """Record one hop of `command` (its priority drives head sampling, its attempt is copied)."""
        if not self.sampler.settings.enabled:
            return 0
        record = TraceRecord(
            command_id=command.command_id,
            trace_id=command.trace_id,
            agent_id=command.agent_id,
            shard_id=command.shard_id or self._shard,
            node=self._node_name,
            hop=hop,
            stamp=self._clock() if stamp is None else stamp,
            attempt=command.attempt if hop in _ATTEMPT_HOPS else 0,
            status=status,
            detail=detail,
        )
        return self.emit(record, command.priority)

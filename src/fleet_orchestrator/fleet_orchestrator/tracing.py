"""The orchestrator's TraceEvents: dispatcher hops are sampled (fleet_core.trace) into a bounded backlog that is
published off the critical path, a bounded number per tick."""

from __future__ import annotations

import collections

from rclpy.publisher import Publisher

from fleet_core.dispatcher import Hop
from fleet_core.trace import Hop as TraceHop
from fleet_core.trace import TraceRecord, TraceSampler, TraceSettings
from fleet_ros.trace_msgs import trace_to_msg

TRACE_FLUSH_PER_TICK = 400
BACKLOG = 50_000


class TraceOutbox:
    def __init__(self, publisher: Publisher, settings: TraceSettings, *, node_name: str, shard_id: str) -> None:
        self.publisher = publisher
        self.sampler = TraceSampler(settings)
        self.node_name = node_name
        self.shard_id = shard_id
        self._backlog: collections.deque[TraceRecord] = collections.deque(maxlen=BACKLOG)

    def queue(self, hops: list[Hop]) -> None:
        shard_id, node = self.shard_id, self.node_name
        for hop in hops:
            record = TraceRecord(
                hop.command_id,
                hop.trace_id,
                hop.agent_id,
                shard_id,
                node,
                TraceHop[hop.hop],
                hop.stamp,
                max(0, hop.attempt),
                hop.status,
                hop.detail,
            )
            self._backlog.extend(self.sampler.offer(record, hop.priority))

    def publish_some(self) -> None:
        """Message construction and publishing happen here, off the command path, a bounded number per tick."""
        for _ in range(min(TRACE_FLUSH_PER_TICK, len(self._backlog))):
            kept = self._backlog.popleft()
            self.publisher.publish(trace_to_msg(kept._replace(detail=kept.detail[:200])))

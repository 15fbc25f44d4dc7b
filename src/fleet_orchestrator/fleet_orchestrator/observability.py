"""The orchestrator's Prometheus metrics and /diagnostics: fed from dispatcher results, acks and the periodic
ShardStatus. Optional (`metrics_port` < 0 turns metrics off); diagnostics ride on the status period."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from fleet_core.dispatcher import DispatchStats
from fleet_core.model import NO_ACK, Ack, CommandResult
from fleet_interfaces.msg import ShardStatus
from fleet_observability.diagnostics import DIAGNOSTICS_TOPIC, shard_diagnostics, shard_stats_from_status
from fleet_observability.metrics import FleetMetrics, MetricsEndpoint, ShardMetrics
from fleet_ros import qos


class ShardObservability:
    def __init__(self, node: Node, site: str, shard: str, *, metrics_port: int) -> None:
        self.site = site
        self.shard = shard
        self.endpoint: MetricsEndpoint | None = None
        self.metrics: ShardMetrics | None = None
        if metrics_port >= 0:
            fleet_metrics = FleetMetrics()
            self.metrics = fleet_metrics.shard(site, shard)
            self.endpoint = fleet_metrics.serve(metrics_port)
            node.get_logger().info(f'metrics for {site}/{shard} at {self.endpoint.url}')
        self._diagnostics = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, qos.EVENTS)
        self._retries = 0
        self._duplicates = 0

    def on_ack(self, ack: Ack) -> None:
        if self.metrics is not None:
            self.metrics.ack(ack.status)

    def on_results(self, results: list[CommandResult]) -> None:
        if self.metrics is None:
            return
        for result in results:
            self.metrics.outcome(result.outcome)
            if result.ack_status != NO_ACK:
                self.metrics.ack_latency(result.latency_ms / 1000.0)

    def on_status(self, stats: DispatchStats, msg: ShardStatus) -> None:
        if self.metrics is not None:
            self.metrics.set_queue_depths(stats.queue_depth)
            self.metrics.set_in_flight(stats.in_flight)
            self.metrics.set_degradation(msg.degradation_level)
            # The dispatcher keeps totals; Prometheus counters take increments.
            self.metrics.retry(max(0, stats.retries - self._retries))
            self.metrics.duplicate_suppressed(max(0, stats.duplicates_suppressed - self._duplicates))
            self._retries, self._duplicates = stats.retries, stats.duplicates_suppressed
        self._diagnostics.publish(shard_diagnostics(self.site, self.shard, shard_stats_from_status(msg)))

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

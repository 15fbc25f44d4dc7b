"""The leader-only endpoints of a shard: the SubmitCommand, GetOutcomes and GetShardState services and the latched
ShardStatus. They exist only while this replica leads, so an operator's request (and a new status subscriber) never
reaches a standby. Conversion only: the answers are the ShardLeader's and its shard journal's."""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.service import Service

from fleet_core import topics
from fleet_core.dispatcher import DispatchStats
from fleet_core.health import HealthMonitor
from fleet_core.shard_effects import Effects, SubmitRequest
from fleet_core.shard_journal import JournalUnavailable
from fleet_core.shard_leader import ShardLeader
from fleet_interfaces.msg import CommandOutcome, Heartbeat, ShardStatus
from fleet_interfaces.srv import GetOutcomes, GetShardState, SubmitCommand
from fleet_ros import qos
from fleet_ros.convert import result_to_msg, to_time

MAX_QUERY_IDS = 10_000


class LeaderServices:
    """Opened at takeover, closed on stepping down; every callback runs on the node's executor thread."""

    def __init__(
        self,
        node: Node,
        leader: ShardLeader,
        apply: Callable[[Effects], None],
        *,
        replica_id: str,
        epoch: Callable[[], int],
        caught_up: Callable[[], bool],
    ) -> None:
        self.node = node
        self.leader = leader
        self._apply = apply
        self.replica_id = replica_id
        self._epoch = epoch
        self._caught_up = caught_up
        self.status_pub: Publisher | None = None
        self._services: list[Service] = []

    def open(self) -> None:
        site, sid = self.leader.site_id, self.leader.shard_id
        self.status_pub = self.node.create_publisher(ShardStatus, topics.shard_status(site, sid), qos.LATCHED)
        self._services = [
            self.node.create_service(SubmitCommand, topics.shard_submit(site, sid), self._on_submit),
            self.node.create_service(GetOutcomes, topics.shard_outcomes_query(site, sid), self._on_get_outcomes),
            self.node.create_service(GetShardState, topics.shard_state(site, sid), self._on_get_state),
        ]

    def close(self) -> tuple[list[Service], list[Publisher]]:
        """Stepped down: the services and the status publisher, for the node to destroy outside the callback that
        made it step down. Without that publisher, this node's last latched status leaves the graph: a new
        subscriber never sees a stale leader."""
        services, self._services = self._services, []
        publishers = [self.status_pub] if self.status_pub is not None else []
        self.status_pub = None
        return services, publishers

    def publish_status(
        self, stats: DispatchStats, health: HealthMonitor, *, stamp: float, following: int, caught_up: int
    ) -> ShardStatus | None:
        """The shard's latched status (None when not leading); `following`/`caught_up`: standbys."""
        dispatcher = self.leader.dispatcher
        if self.status_pub is None or dispatcher is None:
            return None
        lost = health.lost()
        online = health.online()
        msg = ShardStatus(
            site_id=self.leader.site_id,
            shard_id=self.leader.shard_id,
            leader_id=self.replica_id,
            epoch=self._epoch(),
            stamp=to_time(stamp),
            agents_total=len(self.leader.agents),
            agents_online=len(online),
            agents_lost=len(lost),
            lost_agent_ids=lost[:100],
        )
        msg.queue_depth = list(stats.queue_depth)
        msg.in_flight = stats.in_flight
        msg.submitted = stats.submitted
        msg.succeeded = stats.succeeded
        msg.failed = stats.failed
        msg.expired = stats.expired
        msg.rejected = stats.rejected
        msg.shed = stats.shed
        msg.retries = stats.retries
        msg.duplicates_suppressed = stats.duplicates_suppressed
        msg.ack_latency_p50_ms = stats.ack_latency_p50_ms
        msg.ack_latency_p99_ms = stats.ack_latency_p99_ms
        msg.degradation_level = dispatcher.degradation_level
        msg.standbys_following = following
        msg.standbys_caught_up = min(caught_up, following)
        msg.safe_mode_agents = sum(health.health(agent).state == Heartbeat.STATE_SAFE_MODE for agent in online)
        self.status_pub.publish(msg)
        return msg

    def _on_submit(self, request: SubmitCommand.Request, response: SubmitCommand.Response) -> SubmitCommand.Response:
        submission = SubmitRequest(
            tuple(request.agent_ids),
            request.kind,
            request.args_json,
            request.priority,
            request.ttl_sec,
            request.trace_id,
            request.request_id,
        )
        reply, effects = self.leader.submit(submission, caught_up=self._caught_up)
        self._apply(effects)
        response.accepted, response.error, response.duplicate = reply.accepted, reply.error, reply.duplicate
        response.trace_id = reply.trace_id
        response.command_ids = list(reply.command_ids)
        response.agent_ids_out = list(reply.agent_ids)
        response.states = list(reply.states)
        return response

    def _on_get_outcomes(self, request: GetOutcomes.Request, response: GetOutcomes.Response) -> GetOutcomes.Response:
        response.leader_id, response.epoch = self.replica_id, self._epoch()
        if len(request.command_ids) > MAX_QUERY_IDS:
            return response  # no states: the caller reports the refusal
        try:
            fates = self.leader.journal.fates(list(request.command_ids))
        except JournalUnavailable as exc:
            self.node.get_logger().error(f'outcome query failed: {exc}')
            return response
        response.states = [int(f.state) for f in fates]
        response.outcomes = [
            result_to_msg(f.result)
            if f.result is not None
            else CommandOutcome(command_id=f.command_id, agent_id=f.agent_id)
            for f in fates
        ]
        return response

    def _on_get_state(self, request: GetShardState.Request, response: GetShardState.Response) -> GetShardState.Response:
        leader = self.leader
        response.leader_id, response.epoch = self.replica_id, self._epoch()
        response.estop_engaged = leader.estop.engaged
        response.estop_revision = leader.estop.snapshot.revision
        response.paused = leader.paused
        response.operation_id = leader.operation_id
        response.unfinished = len(leader.dispatcher.pending()) if leader.dispatcher is not None else 0
        return response

"""ShardOrchestrator: the lifecycle node that leads (or stands by for) one shard.

Lifecycle: configure opens this replica's shard journal (SQLite, under `state_dir`) and the streams and starts
following the shard (hot copy of commands and of the mission, journaled as followed); activate makes the node
eligible to lead — it leads once no live lease is held by another orchestrator, with the next epoch of its
replica slot (unique per replica: fleet_core.leadership); deactivate steps down, hands its unfinished work to the
next leader and keeps following. Services, the mission action and the latched status exist only while leading, so
an operator's request (and a new status subscriber) never reaches a standby. Every callback runs on one executor
thread.

Durability: a submission is journaled before it is answered, a delivery before it is published, an outcome as it
is decided. A replica that leads (cold start or takeover) adopts every unfinished command of its journal and hot
copy under its new epoch; seqs continue above the journal's high-water marks.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from fleet_core import topics
from fleet_core.config import ConfigError, ShardConfig
from fleet_core.dispatcher import CommandDispatcher
from fleet_core.health import HealthMonitor, UnknownAgent
from fleet_core.leadership import LeaseState
from fleet_core.model import Command, Priority
from fleet_core.replica import ShardReplica
from fleet_core.shard_effects import Effects, LogLevel
from fleet_core.shard_journal import JournalUnavailable, ShardJournal
from fleet_core.shard_leader import ShardLeader
from fleet_core.trace import TraceSampler
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck as CommandAckMsg
from fleet_interfaces.msg import (
    CommandOutcome,
    CommandOutcomes,
    Heartbeat,
    TraceEvent,
)
from fleet_orchestrator.durable import DurableShard
from fleet_orchestrator.election import Election
from fleet_orchestrator.leader_services import LeaderServices
from fleet_orchestrator.mission_server import MissionServer
from fleet_orchestrator.observability import ShardObservability
from fleet_orchestrator.operations import ShardOperations
from fleet_orchestrator.parameters import declare_parameters
from fleet_orchestrator.replication import OUTCOMES_PER_MESSAGE, ShardReplication
from fleet_orchestrator.shard_setup import (
    NotConfigured,
    OrchestratorOptions,
    epoch_slot,
    load_shard,
    open_journal,
    trace_settings,
    workflow_library,
)
from fleet_orchestrator.tracing import TraceOutbox
from fleet_ros import qos
from fleet_ros.convert import ack_from_msg, command_to_msg, from_time, result_to_msg
from fleet_ros.node import TypedLifecycleNode

TICK_SEC = 0.05
RENEW_CHECK_EVERY = 64
"""Deliveries published between lease checks while applying one long batch of effects."""
HEALTH_EVERY_TICKS = 4
"""Liveness is judged every 0.2 s (it is measured in heartbeat periods of a second)."""
ACK_BATCH_SEC = 0.005
"""Acks are collected this long before their outcomes (and the commands they unblock) go out in one batch."""
REANNOUNCE_LEASES = 10.0
"""A new leader re-announces the outcomes it followed during the last REANNOUNCE_LEASES lease periods: a leader that
dies right after announcing may have reached only some subscribers, and DDS cannot repair a dead writer's samples."""
STATUS_PERIOD_SEC = 0.5


class ShardOrchestrator(TypedLifecycleNode):
    def __init__(self, node_name: str = 'orchestrator', *, clock: Callable[[], float] = time.time, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.clock = clock
        self.params = declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.journal: ShardJournal | None = None
        self._leader: ShardLeader | None = None
        self._before_configure: set[Publisher | Subscription | Service] = set()
        self._retired_publishers: list[Publisher] = []
        self.options: OrchestratorOptions | None = None
        self.takeover_seconds: float | None = None
        self._timers: list[Timer] = []
        self._election: Election | None = None
        self._ticks = 0
        self._retired_services: list[Service] = []
        self._retired_subscriptions: list[Subscription] = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            fleet, shard = load_shard(self.params, self.get_namespace())
        except ConfigError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        try:
            journal = open_journal(self.params, shard)
        except (JournalUnavailable, ValueError) as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.journal = journal
        self.options = OrchestratorOptions(
            self.params.site_id, self.params.shard_id, self.replica_id, fleet, trace_settings(self.params, fleet)
        )
        self.shard: ShardConfig = shard
        self.fleet = fleet
        slot = epoch_slot(self.params)
        self.health = HealthMonitor(fleet.health, shard.agents, clock=self.clock)
        self.replica = ShardReplica(shard.agents)
        self.durable = DurableShard(journal, self.replica, own_id=self.replica_id)
        self.rng = random.Random(self.params.retry_jitter_seed or time.time_ns())
        self._leader = ShardLeader(
            site_id=shard.site_id,
            shard_id=shard.shard_id,
            agents=shard.agents,
            fleet=fleet,
            journal=journal,
            workflows=workflow_library(self.params, fleet, self.get_logger().error),
            node_id=self.replica_id,
            clock=self.clock,
            rng=self.rng,
        )
        # Whatever configuring (and leading) creates is destroyed again by on_cleanup, or right here when it fails.
        self._before_configure = {*self.publishers, *self.subscriptions, *self.services}
        self._create_endpoints(shard, slot)
        miswired = self.election.miswired()
        if miswired is not None:
            self.get_logger().error(f'configure failed: {miswired}')
            self.observability.close()
            self._destroy_configured()
            journal.close()
            self.journal, self._leader, self._election = None, None, None
            return TransitionCallbackReturn.FAILURE
        # The ack-batch timer runs only while leading (started at takeover, cancelled on stepping down).
        self._flush_timer = self.create_timer(ACK_BATCH_SEC, self._flush_acked)
        self._flush_timer.cancel()
        self.election.start()
        self._timers = [
            self.create_timer(TICK_SEC, self._tick),
            self.create_timer(STATUS_PERIOD_SEC, self._status),
            self._flush_timer,
        ]
        unfinished = len(journal.unfinished())
        self.get_logger().info(
            f'configured for {shard.site_id}/{shard.shard_id} ({len(shard.agents)} agents) as {self.replica_id} '
            f'(epoch slot {slot}); journal {journal.path}: {unfinished} unfinished command(s), '
            f'highest epoch {journal.max_epoch()}'
        )
        return TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Applies the parameters that may change at runtime (rclpy refuses read_only and out-of-range values before
        calling this)."""
        changed = self.params.apply(params)
        if self.options is not None and {'trace_sample_fraction', 'tracing_enabled'} & set(changed):
            settings = trace_settings(self.params, self.options.fleet)
            self.options = OrchestratorOptions(
                self.options.site_id, self.options.shard_id, self.options.orchestrator_id, self.options.fleet, settings
            )
            self.traces.sampler = TraceSampler(settings)
            self.get_logger().info(
                f'tracing {"on" if settings.enabled else "off"}, sample fraction {settings.sample_fraction}'
            )
        return SetParametersResult(successful=True)

    def _create_endpoints(self, shard: ShardConfig, slot: int) -> None:
        """The shard's topics, services and action, each created by the module that uses it."""
        self._election = Election(
            self,
            shard=shard,
            fleet=self.fleet,
            replica_id=self.replica_id,
            slot=slot,
            clock=self.clock,
            health=self.health,
            replica=self.replica,
            durable=self.durable,
            led_epoch=lambda: self.dispatcher.epoch if self.dispatcher is not None else None,
            step_down=self._step_down,
        )
        self.lease.note_epoch(self.durable.journal.max_epoch())
        site, sid = shard.site_id, shard.shard_id
        self.command_pubs: dict[str, Publisher] = {
            agent: self.create_publisher(CommandMsg, topics.agent_command(site, agent), qos.COMMAND)
            for agent in shard.agents
        }
        self.outcome_pub = self.create_publisher(CommandOutcomes, topics.shard_outcome(site, sid), qos.EVENTS)
        self.trace_pub = self.create_publisher(TraceEvent, topics.shard_trace(site, sid), qos.EVENTS)
        if self.options is None:
            raise NotConfigured('options')
        self.traces = TraceOutbox(self.trace_pub, self.options.trace, node_name=self.get_name(), shard_id=sid)
        self.replication = ShardReplication(
            self,
            self.leader,
            self.durable,
            self.lease,
            replica_id=self.replica_id,
            apply=self._apply,
            journal_failed=self._journal_failed,
            retention_sec=lambda: float(self.params.outcome_retention_sec),
            # Looked up at each entry, not bound once: a test's filter replaces _on_journal on the node.
            on_journal=lambda msg: self._on_journal(msg),  # noqa: PLW0108
        )
        self.observability = ShardObservability(self, site, sid, metrics_port=int(self.params.metrics_port))
        self.create_subscription(CommandAckMsg, topics.shard_ack(site, sid), self._on_ack, qos.ACK)
        self.create_subscription(Heartbeat, topics.shard_heartbeat(site, sid), self._on_heartbeat, qos.HEARTBEAT)
        self.missions = MissionServer(self, self.leader, self._apply)
        self.operations = ShardOperations(self, self.leader, self._apply)
        self.leader_endpoints = LeaderServices(
            self,
            self.leader,
            self._apply,
            replica_id=self.replica_id,
            epoch=lambda: self.lease.epoch,
            caught_up=lambda: self.replication.caught_up(self.clock()),
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.election.eligible = True
        self.get_logger().info('active: eligible to lead; leading once no live lease is held by another')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.election.eligible = False
        self._step_down('deactivated')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.election.eligible = False
        self._step_down('cleanup')
        self.election.stop()
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        self.observability.close()
        self._destroy_configured()
        self._close_journal()
        self._leader, self._election = None, None
        return TransitionCallbackReturn.SUCCESS

    def _destroy_configured(self) -> None:
        """Every endpoint created since on_configure began (the mission and operation servers' too)."""
        self.missions.close()
        self.missions.tick()
        before = self._before_configure
        for publisher in [p for p in self.publishers if p not in before]:
            self.destroy_publisher(publisher)
        for subscription in [s for s in self.subscriptions if s not in before]:
            self.destroy_subscription(subscription)
        for service in [s for s in self.services if s not in before]:
            self.destroy_service(service)
        self.leader_endpoints.close()
        self._retired_services, self._retired_subscriptions, self._retired_publishers = [], [], []

    def _close_journal(self) -> None:
        if self.journal is not None:
            self.durable.persist(self.clock())
            self.journal.close()
            self.journal = None

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._step_down('shutdown')
        if self._election is not None:
            self._election.eligible = False
            self._election.stop()
        if self.options is not None:
            for timer in self._timers:
                timer.cancel()
            try:
                self._close_journal()
            except JournalUnavailable as exc:
                self.get_logger().error(f'shutdown: {exc}')
        return TransitionCallbackReturn.SUCCESS

    # -- leadership --------------------------------------------------------------------------------------

    @property
    def replica_id(self) -> str:
        """This replica's orchestrator_id (its name in leases and the name of its journal directory)."""
        return self.params.orchestrator_id

    @property
    def election(self) -> Election:
        """The replica's lease and candidacy (election.py); exists from on_configure to on_cleanup."""
        if self._election is None:
            raise NotConfigured('the election')
        return self._election

    @property
    def lease(self) -> LeaseState:
        return self.election.lease

    @property
    def leader(self) -> ShardLeader:
        """The replica's decisions (fleet_core.shard_leader); exists from on_configure to on_cleanup."""
        if self._leader is None:
            raise NotConfigured('the shard leader')
        return self._leader

    @property
    def dispatcher(self) -> CommandDispatcher | None:
        """The leader's dispatcher; None while standing by."""
        return self._leader.dispatcher if self._leader is not None else None

    @property
    def leading(self) -> bool:
        return self.dispatcher is not None

    def _on_journal(self, msg: CommandMsg) -> None:
        self.replication.on_journal(msg)

    def _journal(self, commands: list[Command]) -> None:
        """Replicate accepted commands to the standbys (ShardReplication.replicate)."""
        self.replication.replicate(commands, [])

    @property
    def journal_pub(self) -> Publisher:
        return self.replication.journal_pub

    @property
    def untrusted_entries(self) -> int:
        """Entries not from the current lease holder's epoch: counted and logged, never applied."""
        return self.replication.untrusted_entries

    @property
    def _recent_outcomes(self) -> collections.deque[tuple[float, CommandOutcome]]:
        return self.replication.recent_outcomes

    @property
    def status_pub(self) -> Publisher | None:
        """The latched ShardStatus publisher: only while leading."""
        return self.leader_endpoints.status_pub if self._leader is not None else None

    def _take_over(self) -> None:
        if self.options is None or self.journal is None:
            raise NotConfigured('options or journal')
        started = self.clock()
        try:
            self.durable.persist(started)
            plan = self.replica.takeover()
            self.lease.note_epoch(plan.epoch - 1)
            self.lease.note_epoch(self.health.highest_epoch_seen())
            self.lease.note_epoch(self.journal.max_epoch())
            recovered = self.durable.recover(plan.pending)
            previous_epoch = self.lease.max_epoch_seen
            led_epoch = self.journal.led_epoch()
            lease = self.lease.take_over(now=started)
            # Claimed durably before anyone hears of it: a restart of this replica never leads below it.
            self.journal.note_epoch(lease.epoch)
        except JournalUnavailable as exc:
            self._journal_failed(exc)
            return
        effects = self.leader.lead(
            epoch=lease.epoch, seq_base=plan.seq_base, recovered=recovered, previous_epoch=previous_epoch
        )
        self._flush_timer.reset()
        self.replica.handed_over()
        self.replication.stop_following()
        if effects.stepped_down:  # the journal failed while adopting
            self._apply(effects)
            return
        adopted = len(effects.replicate)
        self.election.publish(lease)
        self.replication.lead(previous_epoch=previous_epoch, led_epoch=led_epoch, now=started)
        reannounced = self._reannounce_recent_outcomes(started)
        self._apply(effects)  # the adopted commands, to the standbys' journal
        self.durable.led()
        self.replication.send_snapshot_end()  # followers present now hold the adopted work (the journal above)
        self.missions.open()
        self.operations.open()
        self._apply(self.leader.resume())
        if not self.leading:
            return
        self.leader_endpoints.open()
        self.election.renew_if_due(self.clock())  # the takeover itself may have taken a while
        lapse = started - (self.election.last_lease_seen or started)
        self.takeover_seconds = lapse
        self.get_logger().warning(
            f'LEADER of {self.shard.site_id}/{self.shard.shard_id} with epoch {lease.epoch}; adopted {adopted} '
            f'unfinished command(s) (journal, hot copy), re-announced {reannounced} recent outcome(s); '
            f'{lapse:.2f}s since the last lease was seen'
        )

    def _reannounce_recent_outcomes(self, now: float) -> int:
        """A new leader re-announces the outcomes it followed (or journaled) lately (REANNOUNCE_LEASES)."""
        recent = self.replication.reannounce(now, REANNOUNCE_LEASES * self.lease.config.lease_sec)
        self._publish_outcomes(recent)
        return len(recent)

    def _publish_outcomes(self, outcomes: list[CommandOutcome]) -> None:
        for start in range(0, len(outcomes), OUTCOMES_PER_MESSAGE):
            self.outcome_pub.publish(CommandOutcomes(outcomes=outcomes[start : start + OUTCOMES_PER_MESSAGE]))

    def _step_down(self, reason: str, *, refused: frozenset[str] = frozenset()) -> None:
        """`refused`: commands whose submission failed to be journaled (the submitter was told no): dropped."""
        if self._leader is not None and self._leader.leading:
            self._apply(self._leader.step_down(reason, refused=refused))

    def _stepped_down(self, handoff: list[Command]) -> None:
        """Back to following: what this leader still owed becomes part of the hot copy again, and is handed to
        whoever leads next (the winner of an election race leads already and follows no journal)."""
        self.replica.restore(handoff)
        self.replication.hand_over(handoff)
        self._flush_timer.cancel()
        self.replication.follow()
        self.missions.close()
        # Destroyed at the next tick, outside the callback that made us step down. Without its publisher, this
        # node's last latched status leaves the graph: a new subscriber never sees a stale leader.
        services, publishers = self.leader_endpoints.close()
        self._retired_services += services + self.operations.close()
        self._retired_publishers += publishers
        if handoff:
            self.get_logger().info(f'handed {len(handoff)} unfinished command(s) to the next leader')

    def _apply(self, effects: Effects) -> None:
        """Carry out what the ShardLeader decided, in the order fleet_core.shard_effects.Effects gives."""
        log = self.get_logger()
        for level, text in effects.logs:
            if level is LogLevel.ERROR:
                log.error(text)
            elif level is LogLevel.WARNING:
                log.warning(text)
            else:
                log.info(text)
        if effects.fenced_by:
            self.lease.note_epoch(effects.fenced_by)
        if effects.journal_failed:
            self.election.eligible = False
        self.operations.publish(effects)
        self.missions.publish_journal(effects.mission_journal)
        self.replication.replicate(effects.replicate, effects.records)
        if effects.outcomes:
            self._publish_outcomes([result_to_msg(result) for result in effects.outcomes])
            self.observability.on_results(effects.outcomes)
        self.missions.publish_events(effects)
        self.traces.queue(effects.hops)
        if effects.stepped_down:
            self._stepped_down(effects.handoff)
            return
        for index, command in enumerate(effects.sends):
            # A long burst must not outlive the lease: renew between chunks, and stop commanding at once if it
            # turns out another orchestrator took over meanwhile.
            if index % RENEW_CHECK_EVERY == RENEW_CHECK_EVERY - 1 and not self.election.renew_if_due(self.clock()):
                return
            self.command_pubs[command.agent_id].publish(command_to_msg(command))

    def _journal_failed(self, exc: JournalUnavailable, refused: frozenset[str] = frozenset()) -> None:
        """Work that cannot be recorded must not be accepted: stop leading and stay ineligible until reconfigured."""
        self._apply(self.leader.fail(exc, refused=refused))

    # -- streams -----------------------------------------------------------------------------------------

    def _on_ack(self, msg: CommandAckMsg) -> None:
        try:
            ack = ack_from_msg(msg)
        except ValueError:
            self.get_logger().warning(f'undecodable ack from {msg.agent_id[:64]!r} (status {msg.status})')
            return
        self.replica.on_ack(ack.agent_id, ack.command_id, ack.seq)
        try:
            self.health.on_ack(ack.agent_id)
        except UnknownAgent:
            return
        if self.leading and self.election.renew_if_due(self.clock()):
            self.observability.on_ack(ack)
            # Acks arrive one callback each: their outcomes go out together, from the ACK_BATCH_SEC timer.
            self._apply(self.leader.on_ack(ack))

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        try:
            self.health.on_heartbeat(
                msg.agent_id,
                stamp=from_time(msg.stamp),
                last_applied_seq=msg.last_applied_seq,
                highest_epoch_seen=msg.highest_epoch_seen,
                state=msg.state,
                degradation_level=msg.degradation_level,
            )
        except UnknownAgent:
            return
        self.replica.on_heartbeat(msg.agent_id, msg.last_applied_seq, msg.highest_epoch_seen)
        if self.dispatcher is not None:
            if msg.highest_epoch_seen > self.dispatcher.epoch:
                self._apply(self.leader.on_agent_epoch(msg.agent_id, msg.highest_epoch_seen))
                return
            self.election.renew_if_due(self.clock())

    # -- periodic ----------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock()
        self._ticks += 1
        if self._ticks % HEALTH_EVERY_TICKS == 0:
            self.health.evaluate(now)
        while self._retired_services:
            self.destroy_service(self._retired_services.pop())
        self._retired_subscriptions += self.replication.retired
        self.replication.retired = []
        while self._retired_subscriptions:
            self.destroy_subscription(self._retired_subscriptions.pop())
        while self._retired_publishers:
            self.destroy_publisher(self._retired_publishers.pop())
        self.missions.tick()
        self.missions.snapshot_for_new_readers()
        try:
            if self.journal is not None and self.replication.keep_journal(now):
                self.missions.hand_over()
        except JournalUnavailable as exc:
            self._journal_failed(exc)
        if self.dispatcher is None:
            self.replication.ask_after_gap(now)
            if self.election.due_to_lead(now):
                self._take_over()
        else:
            # Judged at the time of renewal, not the tick's start: the mission tick and the journal above may have
            # taken longer than a lease, and a renewal dated before them would pass the lapse check it should fail.
            if not self.election.renew_if_due(self.clock()):
                return
            self.replication.caught_up(now)
            self.replication.audit_handoffs(now)
            self._apply(self.leader.tick(lost=self.health.lost()))
            try:
                self.replication.snapshot_for_new_followers()
            except JournalUnavailable as exc:
                self._journal_failed(exc)
                return
        self.traces.publish_some()

    def _flush_acked(self) -> None:
        self._apply(self.leader.drain_acks())

    def _status(self) -> None:
        # Only the leader publishes the shard's status; standbys have no status publisher at all.
        if not self.leading:
            return
        stats, effects = self.leader.status()  # backpressure re-evaluates the degradation level
        self._apply(effects)
        self.missions.publish_status()
        following = max(0, self.replication.handoff_pub.get_subscription_count() - 1)  # minus our own
        caught_up = len(self.replication.caught_up_followers)
        msg = self.leader_endpoints.publish_status(
            stats, self.health, stamp=self.clock(), following=following, caught_up=caught_up
        )
        if msg is not None:
            self.observability.on_status(stats, msg)

    # -- services ----------------------------------------------------------------------------------------

    def submit_control(self, agents: list[str], kind: str, priority: Priority, ttl_sec: float, trace_id: str) -> None:
        """Queue an operator-level control command (fleet_core.shard_leader.ShardLeader.submit_control)."""
        self._apply(self.leader.submit_control(agents, kind, priority=priority, ttl_sec=ttl_sec, trace_id=trace_id))

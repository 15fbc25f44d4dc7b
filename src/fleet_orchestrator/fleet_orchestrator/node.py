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
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.service import Service
from rclpy.subscription import Subscription
from rclpy.timer import Timer

from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig, ShardConfig, load_fleet_config
from fleet_core.dispatcher import CommandDispatcher
from fleet_core.health import HealthMonitor, UnknownAgent
from fleet_core.leadership import EPOCH_SLOTS, Lease, LeaseState, NotLeader, WrongShardLease, first_lease_wait
from fleet_core.model import Command, Priority
from fleet_core.replica import ShardReplica
from fleet_core.shard_effects import Effects, LogLevel
from fleet_core.shard_journal import GateVerdict, JournalUnavailable, ShardJournal, SubmissionRecord
from fleet_core.shard_leader import ShardLeader
from fleet_core.trace import TraceSampler, TraceSettings
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck as CommandAckMsg
from fleet_interfaces.msg import (
    CommandOutcome,
    CommandOutcomes,
    Heartbeat,
    LeaderLease,
    TraceEvent,
)
from fleet_interfaces.msg import (
    SubmissionRecord as SubmissionRecordMsg,
)
from fleet_orchestrator.catch_up import CATCH_UP_MAX_SEC, HANDOFF_END, CatchUp
from fleet_orchestrator.durable import (
    SNAPSHOT_END_KIND,
    SNAPSHOT_REQUEST_KIND,
    DurableShard,
    default_state_dir,
    may_take_over,
)
from fleet_orchestrator.leader_services import LeaderServices
from fleet_orchestrator.lease_keeper import LeaseKeeper
from fleet_orchestrator.mission_server import MissionServer, WorkflowLibrary
from fleet_orchestrator.observability import ShardObservability
from fleet_orchestrator.operations import ShardOperations
from fleet_orchestrator.parameters import declare_parameters
from fleet_orchestrator.tracing import TraceOutbox
from fleet_ros import qos
from fleet_ros.convert import (
    ack_from_msg,
    command_from_msg,
    command_to_msg,
    from_time,
    result_from_msg,
    result_to_msg,
    to_time,
)
from fleet_ros.node import TypedLifecycleNode

TICK_SEC = 0.05
RENEW_CHECK_EVERY = 64
"""Sends between lease checks inside one long flush."""
HEALTH_EVERY_TICKS = 4
"""Liveness is judged every 0.2 s (it is measured in heartbeat periods of a second)."""
PRUNE_EVERY_SEC = 30.0
"""How often outcomes past their retention are forgotten."""
LOG_REJECTED_EVERY = 100
"""Untrusted entries are counted; the first and then every 100th is logged."""
ACK_BATCH_SEC = 0.005
"""Acks are collected this long before their outcomes (and the commands they unblock) go out in one flush."""
OUTCOMES_PER_MESSAGE = 256
RECENT_OUTCOMES = 4096
REANNOUNCE_LEASES = 10.0
"""A new leader re-announces the outcomes it followed during the last REANNOUNCE_LEASES lease periods: a leader that
dies right after announcing may have reached only some subscribers, and DDS cannot repair a dead writer's samples."""
STATUS_PERIOD_SEC = 0.5


@dataclass(frozen=True, slots=True)
class OrchestratorOptions:
    site_id: str
    shard_id: str
    orchestrator_id: str
    fleet: FleetConfig
    trace: TraceSettings


class NotConfigured(RuntimeError):
    """A step that needs what on_configure sets up (options, journal) ran before it: a programming error."""

    def __init__(self, what: str) -> None:
        super().__init__(f'{what} not set: the orchestrator is not configured')


class ShardOrchestrator(TypedLifecycleNode):
    def __init__(self, node_name: str = 'orchestrator', *, clock: Callable[[], float] = time.time, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.clock = clock
        self.params = declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.journal: ShardJournal | None = None
        self._leader: ShardLeader | None = None
        self._before_configure: set[Publisher | Subscription | Service] = set()
        self.untrusted_entries = 0
        self._last_prune = 0.0
        self._retired_publishers: list[Publisher] = []
        self._catch_up = CatchUp(0, 0.0, holds_previous=True)
        """Until done, an unknown request_id is answered 'retry' (fleet_orchestrator.catch_up)."""
        self._caught_up_noted = True
        self._followers = 0
        self._caught_up_followers: set[str] = set()  # replica ids that answered this leader's snapshot marker
        self._held_back_logged = False
        self.options: OrchestratorOptions | None = None
        self.takeover_seconds: float | None = None
        self._eligible = False
        self._timers: list[Timer] = []
        self._lease_keeper: LeaseKeeper | None = None
        self._lapse_seen = False
        self._ticks = 0
        self._eligible_since = 0.0
        self._retired_services: list[Service] = []
        self._follow_subs: list[Subscription] = []
        self._follow_generation = 0
        self._recent_outcomes: collections.deque[tuple[float, CommandOutcome]] = collections.deque(
            maxlen=RECENT_OUTCOMES
        )
        self._retired_subscriptions: list[Subscription] = []

    # -- lifecycle ---------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            fleet = load_fleet_config(self.params.fleet_config or None)
            shard = fleet.shard(self.params.site_id, self.params.shard_id)
            namespace = self.get_namespace()
            if namespace.startswith('/fleet/') and namespace != topics.shard_prefix(shard.site_id, shard.shard_id):
                raise ConfigError(
                    f'node namespace {namespace} belongs to another shard than site_id={shard.site_id} '
                    f'shard_id={shard.shard_id}: fix the shard_id parameter or the namespace'
                )
        except ConfigError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        state_dir = (
            Path(self.params.state_dir).expanduser()
            if self.params.state_dir
            else default_state_dir(shard.site_id, shard.shard_id, self.replica_id)
        )
        try:
            journal = ShardJournal(state_dir / 'journal.db', durability=self.params.journal_durability)
        except (JournalUnavailable, ValueError) as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        self.journal = journal
        self.options = OrchestratorOptions(
            self.params.site_id, self.params.shard_id, self.replica_id, fleet, self._trace_settings(fleet)
        )
        self.shard: ShardConfig = shard
        self.fleet = fleet
        slot = (
            self.params.replica_index
            if self.params.replica_index >= 0
            else zlib.crc32(self.replica_id.encode()) % EPOCH_SLOTS
        )
        self.lease = LeaseState(
            site_id=shard.site_id,
            shard_id=shard.shard_id,
            node_id=self.replica_id,
            config=fleet.leadership,
            clock=self.clock,
            slot=slot,
            slots=EPOCH_SLOTS,
        )
        self.health = HealthMonitor(fleet.health, shard.agents, clock=self.clock)
        self.replica = ShardReplica(shard.agents)
        self.durable = DurableShard(journal, self.replica, own_id=self.replica_id)
        self.lease.note_epoch(journal.max_epoch())
        self.rng = random.Random(self.params.retry_jitter_seed or time.time_ns())
        workflow_dir = (
            Path(self.params.workflow_dir) if self.params.workflow_dir else Path(fleet.source).parent / 'workflows'
        )
        library = WorkflowLibrary(workflow_dir)
        for name, error in library.errors.items():
            self.get_logger().error(f'workflow {name} not loaded: {error}')
        self._leader = ShardLeader(
            site_id=shard.site_id,
            shard_id=shard.shard_id,
            agents=shard.agents,
            fleet=fleet,
            journal=journal,
            workflows=library,
            node_id=self.replica_id,
            clock=self.clock,
            rng=self.rng,
        )
        # Whatever configuring (and leading) creates is destroyed again by on_cleanup, or right here when it fails.
        self._before_configure = {*self.publishers, *self.subscriptions, *self.services}
        self._create_endpoints(shard)
        self.missions = MissionServer(self, self._leader, self._apply)
        self.operations = ShardOperations(self, self._leader, self._apply)
        self.leader_endpoints = LeaderServices(
            self,
            self._leader,
            self._apply,
            replica_id=self.replica_id,
            epoch=lambda: self.lease.epoch,
            caught_up=lambda: self._caught_up(self.clock()),
        )
        expected = topics.shard_leader(shard.site_id, shard.shard_id)
        if self._lease_sub.topic_name != expected:
            # Remapped onto another shard's topics: this node is the misconfigured one, so it refuses to run
            # rather than fight (or kill) that shard's correctly configured orchestrators.
            self.get_logger().error(
                f'configure failed: the lease topic resolves to {self._lease_sub.topic_name}, not {expected}: '
                f'this orchestrator is wired to another shard than site_id={shard.site_id} shard_id={shard.shard_id}'
            )
            self.observability.close()
            self._destroy_configured()
            journal.close()
            self.journal, self._leader = None, None
            return TransitionCallbackReturn.FAILURE
        # The ack-batch timer runs only while leading (started at takeover, cancelled on stepping down).
        self._flush_timer = self.create_timer(ACK_BATCH_SEC, self._flush_acked)
        self._flush_timer.cancel()
        # Renewal beside the executor, so that bulk work on it cannot make the lease lapse (lease_keeper.py).
        self._lease_keeper = LeaseKeeper(self.lease, self._publish_lease, log=self.get_logger().warning)
        self._lease_keeper.start()
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

    def _trace_settings(self, fleet: FleetConfig) -> TraceSettings:
        return TraceSettings(
            enabled=bool(self.params.tracing_enabled) and fleet.tracing.enabled,
            sample_fraction=float(self.params.trace_sample_fraction)
            if self.params.trace_sample_fraction >= 0
            else fleet.tracing.sample_fraction,
            pending_commands=fleet.tracing.pending_commands,
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Applies the parameters that may change at runtime (rclpy refuses read_only and out-of-range values before
        calling this)."""
        changed = self.params.apply(params)
        if self.options is not None and {'trace_sample_fraction', 'tracing_enabled'} & set(changed):
            settings = self._trace_settings(self.options.fleet)
            self.options = OrchestratorOptions(
                self.options.site_id, self.options.shard_id, self.options.orchestrator_id, self.options.fleet, settings
            )
            self.traces.sampler = TraceSampler(settings)
            self.get_logger().info(
                f'tracing {"on" if settings.enabled else "off"}, sample fraction {settings.sample_fraction}'
            )
        return SetParametersResult(successful=True)

    def _create_endpoints(self, shard: ShardConfig) -> None:
        site, sid = shard.site_id, shard.shard_id
        self.command_pubs: dict[str, Publisher] = {
            agent: self.create_publisher(CommandMsg, topics.agent_command(site, agent), qos.COMMAND)
            for agent in shard.agents
        }
        self.journal_pub = self.create_publisher(CommandMsg, topics.shard_journal(site, sid), qos.EVENTS)
        self.outcome_pub = self.create_publisher(CommandOutcomes, topics.shard_outcome(site, sid), qos.EVENTS)
        self.trace_pub = self.create_publisher(TraceEvent, topics.shard_trace(site, sid), qos.EVENTS)
        if self.options is None:
            raise NotConfigured('options')
        self.traces = TraceOutbox(self.trace_pub, self.options.trace, node_name=self.get_name(), shard_id=sid)
        # Submission records are rare and decide how a repeated request is answered: kept for late joiners (the
        # last few, transient local) so that a standby matched just after a submission still learns of it.
        submissions = topics.shard_submissions(site, sid)
        self.submission_pub = self.create_publisher(SubmissionRecordMsg, submissions, qos.OPERATIONS)
        self.create_subscription(SubmissionRecordMsg, submissions, self._on_submission, qos.OPERATIONS)
        self.handoff_pub = self.create_publisher(CommandMsg, topics.shard_handoff(site, sid), qos.EVENTS)
        self.create_subscription(CommandMsg, topics.shard_handoff(site, sid), self._on_handoff, qos.EVENTS)
        handed_outcomes = topics.shard_handoff_outcomes(site, sid)
        self.handoff_outcome_pub = self.create_publisher(CommandOutcomes, handed_outcomes, qos.EVENTS)
        self.create_subscription(CommandOutcomes, handed_outcomes, self._on_handed_outcomes, qos.EVENTS)
        self.observability = ShardObservability(self, site, sid, metrics_port=int(self.params.metrics_port))
        self.lease_pub = self.create_publisher(LeaderLease, topics.shard_leader(site, sid), qos.LATCHED)
        self.create_subscription(CommandAckMsg, topics.shard_ack(site, sid), self._on_ack, qos.ACK)
        self.create_subscription(Heartbeat, topics.shard_heartbeat(site, sid), self._on_heartbeat, qos.HEARTBEAT)
        self._follow()
        self._lease_sub = self.create_subscription(
            LeaderLease, topics.shard_leader(site, sid), self._on_lease, qos.LATCHED
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._eligible = True
        self._eligible_since = self.clock()
        self.lease.restart_first_wait()
        self.get_logger().info('active: eligible to lead; leading once no live lease is held by another')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._eligible = False
        self._step_down('deactivated')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._eligible = False
        self._step_down('cleanup')
        if self._lease_keeper is not None:
            self._lease_keeper.stop()
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []
        self.observability.close()
        self._destroy_configured()
        self._close_journal()
        self._leader = None
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
        self._follow_subs = []
        self.leader_endpoints.close()
        self._retired_services, self._retired_subscriptions, self._retired_publishers = [], [], []

    def _close_journal(self) -> None:
        if self.journal is not None:
            self.durable.persist(self.clock())
            self.journal.close()
            self.journal = None

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._eligible = False
        self._step_down('shutdown')
        if self._lease_keeper is not None:
            self._lease_keeper.stop()
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

    @property
    def status_pub(self) -> Publisher | None:
        """The latched ShardStatus publisher: only while leading."""
        return self.leader_endpoints.status_pub if self._leader is not None else None

    def _follow(self) -> None:
        """Subscribe to the leader's journal and outcomes (the hot copy). Only while not leading: a leader that
        read its own streams would pay a second delivery for every command and outcome it publishes."""
        site, sid = self.shard.site_id, self.shard.shard_id
        self._follow_generation += 1
        generation = self._follow_generation

        # Retired subscriptions are destroyed a tick later; until then they may still deliver what this node
        # itself published while leading, which must not re-enter the hot copy (its outcomes were not followed).
        def on_journal(msg: CommandMsg) -> None:
            if generation == self._follow_generation:
                self._on_journal(msg)

        def on_outcome(msg: CommandOutcomes) -> None:
            if generation == self._follow_generation:
                self._on_outcome(msg)

        self._follow_subs = [
            self.create_subscription(CommandMsg, topics.shard_journal(site, sid), on_journal, qos.EVENTS),
            self.create_subscription(CommandOutcomes, topics.shard_outcome(site, sid), on_outcome, qos.EVENTS),
        ]

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
        effects = self.leader.lead(epoch=lease.epoch, seq_base=plan.seq_base, recovered=recovered)
        self._flush_timer.reset()
        self.replica.handed_over()
        self._retired_subscriptions += self._follow_subs
        self._follow_subs = []
        self._follow_generation += 1
        if effects.stepped_down:  # the journal failed while adopting
            self._apply(effects)
            return
        adopted = len(effects.replicate)
        self._publish_lease(lease)
        # It followed the previous leader caught up (took its takeover's journal or its snapshot).
        followed = self.durable.caught_up and self.durable.gate.epoch >= previous_epoch
        self._catch_up = CatchUp.start(
            previous_epoch=previous_epoch, led_epoch=led_epoch, followed=followed, now=started
        )
        self._caught_up_noted = False
        if not self._catch_up.done(started):
            self.get_logger().info(
                f'unknown request_ids are answered "retry" until the journal of epoch {previous_epoch} is handed over '
                f'(at most {CATCH_UP_MAX_SEC:.0f}s)'
            )
        self._followers = self.handoff_pub.get_subscription_count()  # they get the adopted commands below
        reannounced = self._reannounce_recent_outcomes(started)
        self._apply(effects)  # the adopted commands, to the standbys' journal
        self.durable.led()
        self._caught_up_followers.clear()
        self._send_snapshot_end()  # followers present now hold the adopted work (the journal above)
        self.missions.open()
        self.operations.open()
        self._apply(self.leader.resume())
        if not self.leading:
            return
        self.leader_endpoints.open()
        self._renew_if_due(self.clock())  # the takeover itself may have taken a while
        lapse = started - (self._last_lease_seen or started)
        self.takeover_seconds = lapse
        self.get_logger().warning(
            f'LEADER of {self.shard.site_id}/{self.shard.shard_id} with epoch {lease.epoch}; adopted {adopted} '
            f'unfinished command(s) (journal, hot copy), re-announced {reannounced} recent outcome(s); '
            f'{lapse:.2f}s since the last lease was seen'
        )

    def _reannounce_recent_outcomes(self, now: float) -> int:
        """Outcomes are facts, so repeating one is harmless (subscribers key them by command id); missing one is not."""
        window = REANNOUNCE_LEASES * self.lease.config.lease_sec
        recent = [msg for received, msg in self._recent_outcomes if received >= now - window]
        self._recent_outcomes.clear()
        # After a cold start (or an outcome this replica journaled as leader just before it died) the journal is
        # the only place such outcomes are left: those decided shortly before its newest are announced again.
        if self.journal is not None:
            known = {msg.command_id for msg in recent}
            try:
                recent += [result_to_msg(r) for r in self.journal.recent_results(window) if r.command_id not in known]
            except JournalUnavailable as exc:
                self.get_logger().error(f'recent outcomes not re-announced: {exc}')
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
        for command in handoff:
            self.handoff_pub.publish(command_to_msg(command))
        self._flush_timer.cancel()
        self._follow()
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
            self._eligible = False
        self.operations.publish(effects)
        self.missions.publish_journal(effects.mission_journal)
        self._journal(effects.replicate)
        for record in effects.records:
            self.submission_pub.publish(_record_msg(record))
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
            if index % RENEW_CHECK_EVERY == RENEW_CHECK_EVERY - 1 and not self._renew_if_due(self.clock()):
                return
            self.command_pubs[command.agent_id].publish(command_to_msg(command))

    def _journal_failed(self, exc: JournalUnavailable, refused: frozenset[str] = frozenset()) -> None:
        """Work that cannot be recorded must not be accepted: stop leading and stay ineligible until reconfigured."""
        self._apply(self.leader.fail(exc, refused=refused))

    def _journal(self, commands: list[Command]) -> None:
        """Replicate accepted commands to the standbys; skipped while none follows. The topic is volatile: a standby
        that matches later gets a snapshot of the unfinished work on the handoff topic (_snapshot_for_new_followers),
        so that the journal topic carries each accepted command once (recordings replay it as submissions)."""
        self.lease.note_journaled(len(commands))  # sent with the lease: a standby that got fewer sees a gap
        if commands and self.journal_pub.get_subscription_count() > 0:
            for command in commands:
                self.journal_pub.publish(command_to_msg(command))

    def _snapshot_for_new_followers(self) -> None:
        """A replica matched since the last tick (a standby started late, or restarted): send every unfinished
        command (on the handoff topic, with this leader's epoch: followers take it like a journal entry) and the
        recent request records again, so that its hot copy and journal hold what it missed. Followers that had them
        already keep their rows (entries are idempotent)."""
        followers = self.handoff_pub.get_subscription_count()
        joined, self._followers = followers > self._followers, followers
        if not joined or self.dispatcher is None or self.journal is None:
            return
        pending = self.dispatcher.pending()
        for command in pending:
            self.handoff_pub.publish(command_to_msg(command))
        for record in self.journal.recent_requests():
            self.submission_pub.publish(_record_msg(record))
        # Every follower answers the marker again: one that restarted under the same id is counted only once it has.
        self._caught_up_followers.clear()
        self._send_snapshot_end()
        self.get_logger().info(f'a follower joined: sent it {len(pending)} unfinished command(s) of the journal')

    def _send_snapshot_end(self, epoch: int | None = None, kind: str = SNAPSHOT_END_KIND) -> None:
        """The end-of-snapshot marker on the handoff topic (after the entries it closes, same writer): sent by the
        leader in its epoch; answered by a follower that took it, under the follower's own id."""
        if epoch is None:
            epoch = self.dispatcher.epoch if self.dispatcher is not None else 0
        marker = CommandMsg(command_id='', agent_id=self.replica_id, epoch=epoch, kind=kind)
        marker.seq = self.lease.journaled if self.dispatcher is not None else 0  # the journal entries it covers
        marker.site_id, marker.shard_id = self.shard.site_id, self.shard.shard_id
        self.handoff_pub.publish(marker)

    def _on_snapshot_end(self, msg: CommandMsg) -> None:
        if msg.agent_id == self.replica_id:
            return  # our own marker, echoed
        if self.dispatcher is not None:
            if msg.epoch == self.dispatcher.epoch:
                self._caught_up_followers.add(msg.agent_id[:128])
            return
        current = self.lease.current
        # Taken now, or held until the lease of its epoch arrives; answered (and logged) from the tick.
        self.durable.on_snapshot_end(
            msg.epoch,
            leader_id=msg.agent_id,
            current_leader=current.leader_id if current is not None else '',
            covered=msg.seq,
        )

    def _publish_lease(self, lease: Lease) -> None:
        self.lease_pub.publish(
            LeaderLease(
                site_id=lease.site_id,
                shard_id=lease.shard_id,
                leader_id=lease.leader_id,
                epoch=lease.epoch,
                last_seq_hint=lease.last_seq_hint,
                stamp=to_time(lease.stamp),
                lease_sec=lease.lease_sec,
            )
        )

    _last_lease_seen: float | None = None
    _followed: tuple[str, int] = ('', 0)

    def _on_lease(self, msg: LeaderLease) -> None:
        if self.options is None:
            return
        lease = Lease(
            msg.site_id, msg.shard_id, msg.leader_id, msg.epoch, msg.last_seq_hint, from_time(msg.stamp), msg.lease_sec
        )
        try:
            newer = self.lease.observe(lease)
        except WrongShardLease as exc:
            # Our own wiring was checked at configure: the sender is the misconfigured one. Never follow it.
            self.get_logger().error(f'ignored a foreign lease on {self._lease_sub.topic_name}: {exc}')
            return
        self.replica.on_lease(msg.epoch)
        if newer:  # never an older lease (a fenced leader's), nor our own echo
            self.durable.on_lease(msg.epoch, msg.leader_id, written=msg.last_seq_hint, now=self.clock())
        if msg.leader_id != self.replica_id:
            if newer and self._followed != (msg.leader_id, msg.epoch):
                self._followed = (msg.leader_id, msg.epoch)
                self.get_logger().info(f'following leader {msg.leader_id} (epoch {msg.epoch})')
            self._last_lease_seen = self.clock()
        if newer and self.dispatcher is not None and msg.epoch >= self.dispatcher.epoch:
            self._step_down(f'{msg.leader_id} leads with epoch {msg.epoch}')

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
        if self.leading and self._renew_if_due(self.clock()):
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
            self._renew_if_due(self.clock())

    def _on_journal(self, msg: CommandMsg) -> None:
        if self.dispatcher is not None:
            return  # the leader's own journal: its dispatcher already holds these commands
        try:
            command = command_from_msg(msg)
        except ValueError:
            self.get_logger().warning(f'undecodable journal entry {msg.command_id[:64]!r}')
            return
        if self.durable.on_journal_entry(command) is GateVerdict.REJECTED:
            self._untrusted('journal entry', msg.command_id, msg.epoch)

    def _on_submission(self, msg: SubmissionRecordMsg) -> None:
        """A record of the current leader (while following), or one handed over from an older epoch."""
        if msg.request_id == HANDOFF_END:
            if self.dispatcher is not None and self._catch_up.on_handoff_end(msg.epoch):
                self.get_logger().info(f'{msg.trace_id[:64]} handed over the journal of epoch {msg.epoch}: caught up')
            return
        leading_epoch = self.dispatcher.epoch if self.dispatcher is not None else 0
        if msg.epoch == leading_epoch:
            return  # our own
        record = SubmissionRecord(
            msg.request_id,
            msg.trace_id,
            tuple(msg.command_ids),
            tuple(msg.agent_ids),
            msg.epoch,
            from_time(msg.stamp),
        )
        if self.dispatcher is None and self.durable.on_entry(record) is not GateVerdict.REJECTED:
            return
        if self.durable.on_handoff(msg.epoch, leading_epoch=leading_epoch):
            try:
                self.durable.admit(record)
            except JournalUnavailable as exc:
                self._journal_failed(exc)
            return
        self._untrusted('submission record', msg.request_id, msg.epoch)

    def _untrusted(self, what: str, key: str, epoch: int) -> None:
        """Counted and logged, never applied: an entry not from the current lease holder's epoch."""
        self.untrusted_entries += 1
        if self.untrusted_entries % LOG_REJECTED_EVERY == 1:
            self.get_logger().warning(
                f"ignored {what} {key[:64]!r} of epoch {epoch}: the lease holder's epoch is "
                f'{self.durable.gate.epoch} ({self.untrusted_entries} untrusted entries so far)'
            )

    def _on_handoff(self, msg: CommandMsg) -> None:
        if not msg.command_id and msg.kind == SNAPSHOT_END_KIND:
            self._on_snapshot_end(msg)
            return
        if not msg.command_id and msg.kind == SNAPSHOT_REQUEST_KIND:
            if self.dispatcher is not None and msg.epoch == self.dispatcher.epoch:
                self._caught_up_followers.discard(msg.agent_id[:128])
                self._followers = 0  # answered at the next tick like a follower that joined
            return
        if msg.epoch == (self.dispatcher.epoch if self.dispatcher is not None else -1):
            return  # our own hand-over, echoed
        try:
            command = command_from_msg(msg)
        except ValueError:
            self.get_logger().warning(f'undecodable handed-over command {msg.command_id[:64]!r}')
            return
        leading_epoch = self.dispatcher.epoch if self.dispatcher is not None else 0
        if self.dispatcher is None and command.epoch >= self.durable.gate.epoch:
            # The current leader's own work: its snapshot for a follower that joined, or another follower's
            # hand-over of what it followed. Taken like a journal entry (idempotent), and like one held until the
            # leader's lease is seen: a snapshot for a follower that just started overtakes the lease (another topic).
            if self.durable.on_entry(command) is GateVerdict.REJECTED:
                self._untrusted('handed-over command', msg.command_id, msg.epoch)
            return
        if not self.durable.on_handoff(command.epoch, leading_epoch=leading_epoch):
            self._untrusted('handed-over command', msg.command_id, msg.epoch)
            return
        if self.dispatcher is None:
            self.durable.admit(command)
            return
        self.leader.hand_over(command)  # adopted at the next tick, all of a hand-over at once

    def _on_handed_outcomes(self, batch: CommandOutcomes) -> None:
        """Outcomes another replica decided or followed, handed over with its work: a command pending here that
        another replica already decided gets that outcome (the first decision wins; announced again, identically);
        the others are journaled so that they are never adopted later. Only a leader takes them."""
        if not self.leading:
            return
        results = []
        for msg in batch.outcomes:
            try:
                results.append(result_from_msg(msg))
            except ValueError:
                self.get_logger().warning(f'handed-over outcome {msg.command_id[:64]!r} with unknown value')
        self._apply(self.leader.settle(results))

    def _on_outcome(self, batch: CommandOutcomes) -> None:
        if self.dispatcher is not None:
            return  # the leader's own outcomes
        now = self.clock()
        results = []
        for msg in batch.outcomes:
            try:
                result = result_from_msg(msg)
            except ValueError:
                self.get_logger().warning(f'outcome {msg.command_id[:64]!r} with unknown value {msg.outcome}')
                continue
            results.append(result)
            self._recent_outcomes.append((now, msg))
        self.leader.observe_outcomes(results)
        self.durable.on_outcomes(results)

    # -- periodic ----------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = self.clock()
        self._ticks += 1
        if self._ticks % HEALTH_EVERY_TICKS == 0:
            self.health.evaluate(now)
        while self._retired_services:
            self.destroy_service(self._retired_services.pop())
        while self._retired_subscriptions:
            self.destroy_subscription(self._retired_subscriptions.pop())
        while self._retired_publishers:
            self.destroy_publisher(self._retired_publishers.pop())
        self.missions.tick()
        try:
            self._keep_journal(now)
        except JournalUnavailable as exc:
            self._journal_failed(exc)
        if self.dispatcher is None:
            if reason := self.durable.check_gap(now):
                self.get_logger().warning(f'{reason}: not caught up; asking the leader for a snapshot')
            if self.durable.snapshot_request_due(now):
                self._send_snapshot_end(self.durable.gate.epoch, kind=SNAPSHOT_REQUEST_KIND)
            # A lapse must still hold one tick later: lease messages queued behind a slow callback of ours are
            # processed in between, so our own stall cannot pass for the leader's death.
            lapsed = self._eligible and self.lease.should_take_over(now) and not self._lease_on_its_way(now)
            if lapsed and self._lapse_seen and self._caught_up_or_waited(now):
                self._take_over()
            self._lapse_seen = lapsed
        else:
            if not self._renew_if_due(now):
                return
            self._caught_up(now)
            self._apply(self.leader.tick(lost=self.health.lost()))
            try:
                self._snapshot_for_new_followers()
            except JournalUnavailable as exc:
                self._journal_failed(exc)
                return
        self.traces.publish_some()

    def _caught_up_or_waited(self, now: float) -> bool:
        """A standby not caught up with the leader it followed waits (durable.may_take_over says how long)."""
        seen = self._last_lease_seen
        if may_take_over(
            caught_up=self.durable.caught_up,
            lease_seen=seen is not None,
            lapse_sec=now - (seen if seen is not None else now),
            lease_sec=self.lease.config.lease_sec,
        ):
            self._held_back_logged = False
            return True
        if not self._held_back_logged:
            self._held_back_logged = True
            self.get_logger().warning('the lease lapsed, but this replica is not caught up with the leader: waiting')
        return False

    def _keep_journal(self, now: float) -> None:
        """A standby commits what it followed once per tick and hands its unfinished work to a new leader; old
        outcomes are pruned now and then."""
        if self.journal is None:
            return
        self.durable.persist(now)
        if self.durable.answer_due and self.dispatcher is None:
            self._send_snapshot_end(self.durable.answer_due)
            self.get_logger().info(f'caught up with the leader of epoch {self.durable.answer_due}: eligible to lead')
            self.durable.answer_due = 0
        # Once someone besides us listens (the new leader's subscription may match a little after its lease).
        if self.durable.handoff_due and self.dispatcher is None and self.handoff_pub.get_subscription_count() > 1:
            commands, records = self.durable.handoff()
            # Decided outcomes first: the new leader may have adopted (from its own journal) a command this replica
            # saw decided, and must announce that outcome, never a second, different one (chaos seed 3).
            decided = [result_to_msg(r) for r in self.journal.recent_results(self.params.outcome_retention_sec)]
            for start in range(0, len(decided), OUTCOMES_PER_MESSAGE):
                chunk = decided[start : start + OUTCOMES_PER_MESSAGE]
                self.handoff_outcome_pub.publish(CommandOutcomes(outcomes=chunk))
            for command in commands:
                self.handoff_pub.publish(command_to_msg(command))
            for record in records:
                self.submission_pub.publish(_record_msg(record))
            # After the records, same writer: the new leader holds them once it has this (CatchUp).
            end = SubmissionRecordMsg(request_id=HANDOFF_END, trace_id=self.replica_id, epoch=self.journal.led_epoch())
            self.submission_pub.publish(end)
            if commands:
                self.get_logger().info(f'handed {len(commands)} unfinished command(s) of the journal to the new leader')
        if now - self._last_prune >= PRUNE_EVERY_SEC:
            self._last_prune = now
            self.journal.prune(before=now - self.params.outcome_retention_sec)

    def _lease_on_its_way(self, now: float) -> bool:
        """Never saw a lease: keep waiting for one as fleet_core.leadership.first_lease_wait says, from what the
        graph and the agents' heartbeats show."""
        if self.lease.current is not None:
            return False
        site, sid = self.shard.site_id, self.shard.shard_id
        lease_topic = topics.shard_leader(site, sid)
        wait = first_lease_wait(
            self.lease.config,
            slot=self.lease.slot,
            leader_in_graph=self.count_publishers(topics.shard_status(site, sid)) > 0,
            # ours are one publisher and one subscription
            others_on_lease_topic=self.count_publishers(lease_topic) + self.count_subscribers(lease_topic) > 2,
            agents_epoch=self.health.highest_epoch_seen(),
        )
        return now - self._eligible_since < wait

    def _renew_if_due(self, now: float) -> bool:
        """Renew the lease when due; False when we found out we no longer lead. Also called from the busiest
        callbacks, so that a backlog of acks cannot delay renewals past the lease (and hand the shard over)."""
        if self.lease.should_renew(now):
            try:
                self._publish_lease(self.lease.renew(now=now))
            except NotLeader as exc:
                self._step_down(str(exc))
                return False
        return True

    def _flush_acked(self) -> None:
        self._apply(self.leader.drain_acks())

    def _status(self) -> None:
        # Only the leader publishes the shard's status; standbys have no status publisher at all.
        if not self.leading:
            return
        stats, effects = self.leader.status()  # backpressure re-evaluates the degradation level
        self._apply(effects)
        self.missions.publish_status()
        following = max(0, self.handoff_pub.get_subscription_count() - 1)  # minus our own
        msg = self.leader_endpoints.publish_status(
            stats, self.health, stamp=self.clock(), following=following, caught_up=len(self._caught_up_followers)
        )
        if msg is not None:
            self.observability.on_status(stats, msg)

    # -- services ----------------------------------------------------------------------------------------

    def submit_control(self, agents: list[str], kind: str, priority: Priority, ttl_sec: float, trace_id: str) -> None:
        """Queue an operator-level control command (fleet_core.shard_leader.ShardLeader.submit_control)."""
        self._apply(self.leader.submit_control(agents, kind, priority=priority, ttl_sec=ttl_sec, trace_id=trace_id))

    def _caught_up(self, now: float) -> bool:
        """The catch-up ended: its end is noted durably once, so that this replica's own later hand-over vouches for
        the request records of this epoch."""
        if not self._catch_up.done(now):
            return False
        if not self._caught_up_noted and self.dispatcher is not None and self.journal is not None:
            self._caught_up_noted = True
            try:
                self.journal.note_led(self.dispatcher.epoch)
            except JournalUnavailable as exc:
                self.get_logger().error(f'end of catch-up not noted: {exc}')
        return True


def _record_msg(record: SubmissionRecord) -> SubmissionRecordMsg:
    return SubmissionRecordMsg(
        request_id=record.request_id,
        trace_id=record.trace_id,
        epoch=record.epoch,
        command_ids=list(record.command_ids),
        agent_ids=list(record.agent_ids),
        stamp=to_time(record.stamp),
    )

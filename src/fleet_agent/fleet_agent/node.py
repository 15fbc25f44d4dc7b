"""AgentHostNode: the ROS shell around one or many AgentRuntimes (one on a robot computer, hundreds in the
simulator), sharing one ack and heartbeat publisher per shard."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rclpy.context import Context
from rclpy.node import Node

from fleet_agent.commit import GroupCommitter, immediately
from fleet_agent.executors import ExecutorContext, ExecutorFactory
from fleet_agent.runtime import AgentRuntime, HeartbeatData, Operation
from fleet_core import topics
from fleet_core.config import IntakeSettings
from fleet_core.dedup_store import DedupDatabase, DedupStore, StoreUnavailable
from fleet_core.degradation import DegradationConfig
from fleet_core.intake import CommandIntake
from fleet_core.kinds import KindRegistry
from fleet_core.model import Ack, AckStatus, Command
from fleet_core.trace import Hop, TraceSettings
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck as CommandAckMsg
from fleet_interfaces.msg import EStop, FleetOperation, Heartbeat, LeaderLease, ShardStatus
from fleet_ros import qos
from fleet_ros.convert import ack_to_msg, command_from_msg, from_time, to_time
from fleet_ros.node import TypedNode
from fleet_ros.trace_msgs import TraceEmitter


@dataclass(frozen=True, slots=True)
class AgentSpec:
    site_id: str
    shard_id: str
    agent_id: str


LinkFilter = Callable[[str], bool]
"""Fault-injection hook: called with an agent id, False while that agent's link is cut (its commands, acks and
heartbeats are dropped, as by a network outage). Production agents have none."""

AgentClock = Callable[[str], Callable[[], float]]
"""Fault-injection hook: the UTC clock of one agent (the simulator skews clocks with it)."""


HEARTBEAT_SLICE_SEC = 0.01


class _ShardSink:
    def __init__(
        self,
        node: Node,
        site: str,
        shard: str,
        link: LinkFilter | None = None,
        trace: TraceSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.acks = node.create_publisher(CommandAckMsg, topics.shard_ack(site, shard), qos.ACK)
        self.heartbeats = node.create_publisher(Heartbeat, topics.shard_heartbeat(site, shard), qos.HEARTBEAT)
        self.link = link
        # The agent's RECEIVE/START/FINISH hops, sampled as the orchestrator samples its own (same trace-id hash, so
        # a sampled submission is traced on both sides; failures are always kept).
        self.traces = TraceEmitter(node, site, shard, trace or TraceSettings(enabled=False), clock=clock)

    def trace_hop(self, hop: Hop, command: Command, status: str, detail: str) -> None:
        if self.link is None or self.link(command.agent_id):
            self.traces.hop(hop, command, status=status, detail=detail[:200])

    def publish_ack(self, ack: Ack) -> None:
        if self.link is None or self.link(ack.agent_id):
            self.acks.publish(ack_to_msg(ack))


class AgentHostNode(TypedNode):
    """Hosts agents. ROS callbacks run on the spin thread and hand every message to the asyncio loop, where
    all agent state lives (so intake, store and executor tasks are single-threaded)."""

    def __init__(
        self,
        specs: list[AgentSpec],
        *,
        loop: asyncio.AbstractEventLoop,
        store_dir: Path,
        executor_factory: ExecutorFactory,
        intake_settings: IntakeSettings,
        heartbeat_period_sec: float,
        node_name: str = 'agent_host',
        context: Context | None = None,
        clock: Callable[[], float] = time.time,
        link: LinkFilter | None = None,
        agent_clock: AgentClock | None = None,
        trace_settings: TraceSettings | None = None,
        degradation: DegradationConfig | None = None,
    ) -> None:
        super().__init__(node_name, context=context)
        try:
            self._host(
                specs,
                store_name=node_name,
                loop=loop,
                store_dir=store_dir,
                executor_factory=executor_factory,
                intake_settings=intake_settings,
                heartbeat_period_sec=heartbeat_period_sec,
                clock=clock,
                link=link,
                agent_clock=agent_clock,
                trace_settings=trace_settings,
                degradation=degradation,
            )
        except BaseException:
            self.destroy_node()  # nobody else holds the half-built node
            raise

    def _host(
        self,
        specs: list[AgentSpec],
        *,
        store_name: str,
        loop: asyncio.AbstractEventLoop,
        store_dir: Path,
        executor_factory: ExecutorFactory,
        intake_settings: IntakeSettings,
        heartbeat_period_sec: float,
        clock: Callable[[], float] = time.time,
        link: LinkFilter | None = None,
        agent_clock: AgentClock | None = None,
        trace_settings: TraceSettings | None = None,
        degradation: DegradationConfig | None = None,
    ) -> None:
        """Everything but the Node itself: a subclass may declare and read its parameters first (fleet_agent's
        main does, so that `ros2 param` on the running node shows them), then call this. The dedup database is
        `<store_dir>/<store_name>.sqlite`."""
        self.loop = loop
        self.clock = clock
        self.trace_settings = trace_settings
        self.link = link
        self._agent_clock = agent_clock or (lambda _agent: clock)
        self.heartbeat_period_sec = heartbeat_period_sec
        self.runtimes: dict[str, AgentRuntime] = {}
        self._inbox: collections.deque[tuple[str, CommandMsg]] = collections.deque()
        self._wake_pending = False
        self._sinks: dict[tuple[str, str], _ShardSink] = {}
        kinds = KindRegistry(max_args_bytes=intake_settings.max_args_bytes)
        store_dir.mkdir(parents=True, exist_ok=True)
        # One dedup database for every hosted agent, with group commit: the writes of one loop turn share one
        # transaction (hundreds of simulated agents would otherwise pay one SQLite commit each, in one thread).
        self.database: DedupDatabase | None = None
        self._store_error = ''
        try:
            # Named after the host: two host processes must never share a file (their transactions would block
            # each other), while a restarted host finds its own again.
            self.database = DedupDatabase(
                store_dir / f'{store_name}.sqlite', durability=intake_settings.durability, group_commit=True
            )
        except StoreUnavailable as exc:
            self._store_error = str(exc)
            self.get_logger().error(f'SAFE MODE for every hosted agent, refusing all commands: {exc}')
        self.committer = GroupCommitter(self.database, loop) if self.database is not None else None
        try:
            for spec in specs:
                key = (spec.site_id, spec.shard_id)
                if key not in self._sinks:
                    self._sinks[key] = _ShardSink(self, *key, link=link, trace=trace_settings, clock=clock)
                    self._subscribe_shard(*key)
                context = ExecutorContext(
                    spec.site_id,
                    spec.shard_id,
                    spec.agent_id,
                    self,
                    loop,
                    degradation_level=partial(self._degradation_level, spec.agent_id),
                    degradation=degradation or DegradationConfig(),
                )
                executor = executor_factory(context)
                self.runtimes[spec.agent_id] = AgentRuntime(
                    site_id=spec.site_id,
                    intake=self._intake(spec, store_dir, kinds, intake_settings),
                    executor=executor,
                    sink=self._sinks[key],
                    clock=self._agent_clock(spec.agent_id),
                    battery=getattr(executor, 'battery_pct', None),
                    after_commit=self.committer.after_commit if self.committer is not None else immediately,
                    accept_ack_delay_sec=intake_settings.accept_ack_delay_sec,
                    trace=self._sinks[key].trace_hop,
                )
                self.create_subscription(
                    CommandMsg,
                    topics.agent_command(spec.site_id, spec.agent_id),
                    partial(self._hand_over, spec.agent_id),
                    qos.COMMAND,
                )
        except BaseException:
            self._close_database()  # a start that fails half-way (a plug-in refusing an agent) keeps nothing open
            raise
        self.get_logger().info(
            f'hosting {len(specs)} agent(s) in {len(self._sinks)} shard(s); stores in {store_dir} '
            f'(durability {intake_settings.durability})'
        )

    def _intake(self, spec: AgentSpec, store_dir: Path, kinds: KindRegistry, settings: IntakeSettings) -> CommandIntake:
        store: DedupStore | None = None
        reason = self._store_error
        if self.database is not None:
            try:
                store = DedupStore(self.database, spec.agent_id, window=settings.dedup_window)
                if store.divergence:
                    self.get_logger().error(f'agent {spec.agent_id}: {store.divergence}')
            except StoreUnavailable as exc:
                reason = str(exc)
                self.get_logger().error(f'agent {spec.agent_id}: SAFE MODE, refusing all commands: {reason}')
        return CommandIntake(
            agent_id=spec.agent_id,
            shard_id=spec.shard_id,
            store=store,
            kinds=kinds,
            settings=settings,
            clock=self._agent_clock(spec.agent_id),
            safe_mode_reason=reason,
        )

    def _subscribe_shard(self, site: str, shard: str) -> None:
        def in_shard(fn: Callable[[AgentRuntime], None]) -> None:
            for runtime in self.runtimes.values():
                if runtime.shard_id == shard and runtime.site_id == site:
                    fn(runtime)

        def on_estop(msg: EStop) -> None:
            self.loop.call_soon_threadsafe(in_shard, lambda r: r.on_estop(msg.engaged, msg.revision))

        def on_lease(msg: LeaderLease) -> None:
            self.loop.call_soon_threadsafe(in_shard, lambda r: r.on_epoch(msg.epoch))

        def on_status(msg: ShardStatus) -> None:
            level = msg.degradation_level
            self.loop.call_soon_threadsafe(in_shard, lambda r: setattr(r, 'degradation_level', level))

        def on_operation(msg: FleetOperation) -> None:
            if msg.op not in (FleetOperation.OP_PAUSE, FleetOperation.OP_RESUME):
                return
            starts_at = from_time(msg.starts_at)
            operation = Operation(
                pause=msg.op == FleetOperation.OP_PAUSE,
                starts_at=starts_at,
                last_wave_at=starts_at + max(0, msg.waves - 1) * msg.wave_interval_sec,
            )
            self.loop.call_soon_threadsafe(in_shard, lambda r: r.on_operation(operation))

        self.create_subscription(EStop, topics.shard_estop(site, shard), on_estop, qos.LATCHED)
        self.create_subscription(FleetOperation, topics.shard_operations(site, shard), on_operation, qos.OPERATIONS)
        self.create_subscription(LeaderLease, topics.shard_leader(site, shard), on_lease, qos.LATCHED)
        self.create_subscription(ShardStatus, topics.shard_status(site, shard), on_status, qos.LATCHED)

    def _degradation_level(self, agent_id: str) -> int:
        return self.runtimes[agent_id].degradation_level

    def _hand_over(self, agent_id: str, msg: CommandMsg) -> None:
        """Spin thread -> loop. A burst of commands (a fan-out reaches hundreds of hosted agents at once) costs
        one loop wake-up, not one per message."""
        self._inbox.append((agent_id, msg))
        if not self._wake_pending:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self._drain_inbox)

    def _drain_inbox(self) -> None:
        self._wake_pending = False  # cleared first: anything appended from now on schedules another drain
        while self._inbox:
            self._on_command(*self._inbox.popleft())

    def _on_command(self, agent_id: str, msg: CommandMsg) -> None:
        if self.link is not None and not self.link(agent_id):
            return
        runtime = self.runtimes[agent_id]
        try:
            command = command_from_msg(msg)
        except ValueError as exc:
            self._sinks[(runtime.site_id, runtime.shard_id)].acks.publish(
                CommandAckMsg(
                    command_id=msg.command_id[:64],
                    trace_id=msg.trace_id[:64],
                    agent_id=agent_id,
                    shard_id=runtime.shard_id,
                    seq=msg.seq,
                    epoch=msg.epoch,
                    attempt=msg.attempt,
                    status=int(AckStatus.REJECTED_INVALID),
                    final=True,
                    detail=f'undecodable command: {exc}'[:200],
                    stamp=to_time(self.clock()),
                )
            )
            return
        runtime.on_command(command)

    async def run_heartbeats(self) -> None:
        # Spread over the period in small slices: hundreds of heartbeats in one burst would stall command
        # handling on this loop for tens of milliseconds.
        runtimes = list(self.runtimes.values())
        slices = max(1, min(len(runtimes), round(self.heartbeat_period_sec / HEARTBEAT_SLICE_SEC)))
        per_slice = -(-len(runtimes) // slices)
        while True:
            for start in range(0, len(runtimes), per_slice):
                for runtime in runtimes[start : start + per_slice]:
                    if self.link is not None and not self.link(runtime.agent_id):
                        continue
                    sink = self._sinks[(runtime.site_id, runtime.shard_id)]
                    sink.heartbeats.publish(heartbeat_msg(runtime.heartbeat()))
                await asyncio.sleep(self.heartbeat_period_sec / slices)

    async def close_runtimes(self) -> None:
        try:
            await asyncio.gather(*(r.close() for r in self.runtimes.values()))
            await asyncio.sleep(0)  # let the last group commit run and its acks go out
            if self.database is not None:
                self.database.commit()
        finally:
            self._close_database()

    def _close_database(self) -> None:
        if self.database is not None:
            self.database.close()


def heartbeat_msg(data: HeartbeatData) -> Heartbeat:
    return Heartbeat(
        agent_id=data.agent_id,
        site_id=data.site_id,
        shard_id=data.shard_id,
        stamp=to_time(data.stamp),
        state=int(data.state),
        last_applied_seq=data.last_applied_seq,
        highest_epoch_seen=data.highest_epoch_seen,
        active_command_id=data.active_command_id,
        degradation_level=data.degradation_level,
        battery_pct=data.battery_pct,
        safe_mode_reason=data.safe_mode_reason,
    )

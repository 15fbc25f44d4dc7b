"""One agent's behaviour on its asyncio loop: intake decisions, executor tasks, e-stop, acks, heartbeats.
No ROS here: the node feeds it decoded messages and publishes what it emits through an AgentSink."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fleet_agent.commit import immediately
from fleet_agent.executors import CommandExecutor, ExecutionResult
from fleet_core.config import IntakeSettings
from fleet_core.dedup_store import StoreUnavailable
from fleet_core.intake import CommandIntake
from fleet_core.model import Ack, AckStatus, Command, Priority
from fleet_core.trace import Hop

_log = logging.getLogger('fleet_agent')

OPERATION_GRACE_SEC = 2.0
"""How long after an operation's last wave an agent that got no command from it applies it itself."""


@dataclass(frozen=True, slots=True)
class Operation:
    """A shard-wide pause or resume, as its latched FleetOperation announces it (orchestrator clock, UTC)."""

    pause: bool
    starts_at: float
    last_wave_at: float


class AgentState(enum.IntEnum):
    """Values of fleet_interfaces/Heartbeat.state."""

    IDLE = 0
    BUSY = 1
    PAUSED = 2
    ESTOPPED = 3
    SAFE_MODE = 4


@dataclass(frozen=True, slots=True)
class HeartbeatData:
    agent_id: str
    site_id: str
    shard_id: str
    stamp: float
    state: AgentState
    last_applied_seq: int
    highest_epoch_seen: int
    active_command_id: str
    degradation_level: int
    battery_pct: float
    safe_mode_reason: str = ''


class AgentSink(Protocol):
    def publish_ack(self, ack: Ack) -> None: ...


Tracer = Callable[[Hop, Command, str, str], object]
"""Records one agent-side hop of a command: (hop, command, status, detail). The node samples and publishes it."""


def no_trace(_hop: Hop, _command: Command, _status: str, _detail: str) -> None:
    return None


class AgentRuntime:
    """Runs on one asyncio loop; every method must be called from that loop's thread."""

    def __init__(
        self,
        *,
        site_id: str,
        intake: CommandIntake,
        executor: CommandExecutor,
        sink: AgentSink,
        clock: Callable[[], float],
        battery: Callable[[], float] | None = None,
        accept_ack_delay_sec: float = IntakeSettings().accept_ack_delay_sec,
        after_commit: Callable[[Callable[[], None], Callable[[StoreUnavailable], None]], None] = immediately,
        trace: Tracer = no_trace,
        operation_grace_sec: float = OPERATION_GRACE_SEC,
    ) -> None:
        self.site_id = site_id
        self.agent_id = intake.agent_id
        self.shard_id = intake.shard_id
        self.intake = intake
        self.executor = executor
        self.sink = sink
        self.clock = clock
        self.battery = battery or (lambda: math.nan)
        self.degradation_level = 0
        self.estop_revision = -1
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._accepted_later: dict[str, asyncio.TimerHandle] = {}
        self.accept_ack_delay_sec = accept_ack_delay_sec
        self.after_commit = after_commit
        self.trace = trace
        self.executions = 0
        self.operation_grace_sec = operation_grace_sec
        self._operation: Operation | None = None
        self._operation_check: asyncio.TimerHandle | None = None

    # -- inputs ------------------------------------------------------------------------------------------

    def on_command(self, command: Command) -> None:
        decision = self.intake.receive(command)
        self.trace(Hop.RECEIVE, command, decision.ack.status.name, decision.ack.detail)
        if not decision.execute:
            if decision.ack.status.is_rejection:
                _log.debug('%s rejected %s: %s', self.agent_id, command.command_id, decision.ack.detail)
            # A reply may rest on a write (an interrupted command marked FAILED): send it once durable.
            self.after_commit(lambda: self.sink.publish_ack(decision.ack), lambda exc: self._refuse(command, exc))
            return
        # Execution starts only once "started" is durable: a crash before that leaves nothing to re-run.
        self.after_commit(
            lambda: self._start(command, decision.ack, decision.args), lambda exc: self._refuse(command, exc)
        )

    def _refuse(self, command: Command, exc: StoreUnavailable) -> None:
        self.intake.enter_safe_mode(exc)
        self.trace(Hop.REJECT, command, AckStatus.REJECTED_SAFE_MODE.name, str(exc))
        self.sink.publish_ack(Ack.for_command(command, AckStatus.REJECTED_SAFE_MODE, str(exc)[:200], self.clock()))

    def _start(self, command: Command, accepted: Ack, args: dict[str, object]) -> None:
        if self.intake.estopped and command.priority < Priority.SAFETY:
            # The e-stop engaged while "started" was being committed: it never runs.
            ack = self.intake.complete(command, AckStatus.CANCELLED, 'e-stop engaged before execution started')
            self.after_commit(lambda: self._finished(command, ack), lambda exc: self._not_persisted(command, exc))
            return
        if command.kind == 'stop':
            self._cancel_running('stopped by a SAFETY stop', keep=command.command_id)
        loop = asyncio.get_running_loop()
        self.trace(Hop.START, command, '', '')
        # Like a delayed TCP ACK, ACCEPTED goes out only if the command is still running after
        # accept_ack_delay_sec; a quick command is answered by its final ack alone.
        if self.accept_ack_delay_sec > 0:
            self._accepted_later[command.command_id] = loop.call_later(
                self.accept_ack_delay_sec, self.sink.publish_ack, accepted
            )
        else:
            self.sink.publish_ack(accepted)
        task = loop.create_task(self._run(command, args), name=f'{self.agent_id}:{command.command_id}')
        self._tasks[command.command_id] = task
        task.add_done_callback(lambda done: self._cancelled_before_start(command, done))

    def on_estop(self, engaged: bool, revision: int) -> None:
        """Latched e-stop state for this agent's shard; older revisions are ignored."""
        if revision <= self.estop_revision:
            return
        self.estop_revision = revision
        self.intake.estopped = engaged
        if engaged:
            self._cancel_running('e-stop engaged')

    def on_epoch(self, epoch: int) -> None:
        self.intake.observe_epoch(epoch)

    def on_operation(self, operation: Operation) -> None:
        """The shard's latest pause/resume announcement (latched: a restarted agent gets it too). Its own HIGH
        command normally applies it; an agent that missed that command (down or cut off during the waves, the command
        expired) applies the operation itself once the waves are over, so it never stays paused, or unpaused,
        against its shard."""
        if self._operation is not None and operation.starts_at <= self._operation.starts_at:
            return
        self._operation = operation
        self._apply_missed_operation()

    def _apply_missed_operation(self) -> None:
        operation = self._operation
        if self._operation_check is not None:
            self._operation_check.cancel()
            self._operation_check = None
        if operation is None or not self.intake.operation_missed(operation.starts_at):
            return
        wait = operation.last_wave_at + self.operation_grace_sec - self.clock()
        if wait > 0:
            self._operation_check = asyncio.get_running_loop().call_later(wait, self._apply_missed_operation)
            return
        try:
            self.intake.set_paused(operation.pause)
        except StoreUnavailable as exc:
            _log.error('%s cannot apply a missed operation: %s', self.agent_id, exc)
            return
        _log.warning('%s applied a missed shard %s', self.agent_id, 'pause' if operation.pause else 'resume')
        self.after_commit(lambda: None, self.intake.enter_safe_mode)

    # -- execution ---------------------------------------------------------------------------------------

    def _cancel_running(self, reason: str, keep: str = '') -> None:
        for command_id, task in self._tasks.items():
            if command_id != keep and not task.done():
                task.cancel(reason)

    async def _run(self, command: Command, args: dict[str, object]) -> None:
        status, detail = AckStatus.FAILED, ''
        try:
            if not self.intake.may_start(command):
                status, detail = AckStatus.FAILED, 'deadline passed before execution could start'
            else:
                async with asyncio.timeout(max(0.0, command.deadline - self.clock())):
                    result = await self._execute(command, args)
                status = AckStatus.SUCCEEDED if result.success else AckStatus.FAILED
                detail = result.detail
                self.executions += 1
        except TimeoutError:
            status, detail = AckStatus.FAILED, 'deadline reached during execution; stopped'
        except asyncio.CancelledError as exc:
            status, detail = AckStatus.CANCELLED, str(exc.args[0]) if exc.args else 'cancelled'
        except Exception as exc:  # noqa: BLE001 - boundary: a vendor executor bug must still end in a definite, reported outcome
            _log.exception('%s executor raised on %s', self.agent_id, command.command_id)
            status, detail = AckStatus.FAILED, f'executor error: {type(exc).__name__}: {exc}'[:200]
        finally:
            self._tasks.pop(command.command_id, None)
        self._conclude(command, status, detail)

    def _cancelled_before_start(self, command: Command, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never runs its coroutine (asyncio throws CancelledError in before
        the first line), so `_run` cannot conclude it: an e-stop or a SAFETY stop handled in the loop iteration that
        started the command. Concluded here, CANCELLED; otherwise the command stays "already executing" for good, and
        its shard's lane waits for its deadline."""
        if not task.cancelled():
            return  # `_run` ran and concluded it (it catches its own cancellation)
        self._tasks.pop(command.command_id, None)
        reason = 'cancelled'
        try:
            task.result()
        except asyncio.CancelledError as exc:
            reason = str(exc.args[0]) if exc.args else reason
        self._conclude(command, AckStatus.CANCELLED, f'{reason} before execution started')

    def _conclude(self, command: Command, status: AckStatus, detail: str) -> None:
        """Persist the final status, then send the final ack (or refuse to claim it, if it cannot be persisted)."""
        pending_accept = self._accepted_later.pop(command.command_id, None)
        if pending_accept is not None:
            pending_accept.cancel()
        try:
            ack = self.intake.complete(command, status, detail)
        except StoreUnavailable as exc:
            self._not_persisted(command, exc)
            return
        self.after_commit(lambda: self._finished(command, ack), lambda exc: self._not_persisted(command, exc))

    def _finished(self, command: Command, ack: Ack) -> None:
        """The final status is durable: trace the FINISH hop and send the final ack."""
        self.trace(Hop.FINISH, command, ack.status.name, ack.detail)
        self.sink.publish_ack(ack)

    def _not_persisted(self, command: Command, exc: StoreUnavailable) -> None:
        # The outcome could not be persisted: never claim success we cannot remember.
        _log.error('%s cannot persist %s: %s', self.agent_id, command.command_id, exc)
        self.intake.enter_safe_mode(exc)
        self.trace(Hop.FINISH, command, AckStatus.FAILED.name, f'outcome not persisted: {exc}')
        self.sink.publish_ack(
            Ack.for_command(command, AckStatus.FAILED, f'outcome not persisted: {exc}'[:200], self.clock())
        )

    async def _execute(self, command: Command, args: dict[str, object]) -> ExecutionResult:
        if command.kind == 'stop':
            return ExecutionResult(True, 'stopped')
        if command.kind == 'pause':
            self.intake.set_paused(True)
            return ExecutionResult(True, 'paused: NORMAL and LOW commands are refused until resumed')
        if command.kind == 'resume':
            self.intake.set_paused(False)
            return ExecutionResult(True, 'resumed')
        return await self.executor.execute(command, args)

    # -- observation -------------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self.intake.paused

    @property
    def state(self) -> AgentState:
        if self.intake.safe_mode:
            return AgentState.SAFE_MODE
        if self.intake.estopped:
            return AgentState.ESTOPPED
        if self._tasks:
            return AgentState.BUSY
        return AgentState.PAUSED if self.paused else AgentState.IDLE

    def heartbeat(self) -> HeartbeatData:
        active = next(iter(self._tasks), '')
        return HeartbeatData(
            agent_id=self.agent_id,
            site_id=self.site_id,
            shard_id=self.shard_id,
            stamp=self.clock(),
            state=self.state,
            last_applied_seq=self.intake.last_applied_seq,
            highest_epoch_seen=self.intake.highest_epoch,
            active_command_id=active,
            degradation_level=self.degradation_level,
            battery_pct=self.battery(),
            safe_mode_reason=self.intake.safe_mode_reason[:200],
        )

    async def close(self) -> None:
        """Cancel running work (its final acks are still persisted and published)."""
        if self._operation_check is not None:
            self._operation_check.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel('agent shutting down')
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

"""The agent-side decision for each incoming command (DESIGN.md section 5), in a fixed order:
structure, epoch fencing, command-id dedup, deadline, seq ordering, e-stop, pause, kind/arguments; then execute.

Pause: a fleet operation pauses an agent with a HIGH `pause` command (sent in waves by the shard leader) and
resumes it with a HIGH `resume`. While paused, the agent *refuses* NORMAL and LOW commands with REJECTED_PAUSED
(the command's outcome is REJECTED, naming the pause) rather than holding them: a held command would keep its
lane busy and might outlive its deadline unseen, while a refusal gives the submitter a definite fate at once.
HIGH and SAFETY commands still run. A command already running when the pause arrives finishes. The paused state
and when it was applied are persisted in the dedup store, so an agent restarted while paused stays paused; an agent
that missed an operation's command (down or cut off during its waves) applies it from the shard's latched
FleetOperation announcement once the waves are over (`operation_missed`).

Safe mode: a store that cannot be opened or written refuses every command (REJECTED_SAFE_MODE). A store that opens
but lost started commands (its start guard disagrees, see dedup_store) is usable: the agent answers re-deliveries
from it (lost commands FAILED, never re-executed) and runs SAFETY commands only, until an operator clears it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_core.config import IntakeSettings
from fleet_core.dedup_store import DedupStore, StoredOutcome, StoreUnavailable
from fleet_core.kinds import InvalidCommand, KindRegistry
from fleet_core.model import Ack, AckStatus, Command, Priority

MAX_ID_LENGTH = 64
MAX_SEQ = 2**63 - 1
PAUSED_DETAIL = 'agent paused by a fleet operation: only HIGH and SAFETY commands run until it is resumed'

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class IntakeDecision:
    """`execute` is True only for an accepted command (ack is ACCEPTED); otherwise `ack` is the reply to send."""

    execute: bool
    ack: Ack
    args: dict[str, Any] = field(default_factory=dict)


class CommandIntake:
    """Decides, persists and acknowledges. Holds no ROS state: the agent node feeds it decoded commands."""

    def __init__(
        self,
        *,
        agent_id: str,
        shard_id: str,
        store: DedupStore | None,
        kinds: KindRegistry,
        settings: IntakeSettings,
        clock: Clock,
        safe_mode_reason: str = '',
    ) -> None:
        self.agent_id = agent_id
        self.shard_id = shard_id
        self.kinds = kinds
        self.settings = settings
        self.clock = clock
        self._store = store
        self.safe_mode_reason = safe_mode_reason if store is None else store.divergence
        if store is None and not self.safe_mode_reason:
            self.safe_mode_reason = 'no dedup store'
        self._safety_only = store is not None and bool(store.divergence)
        """Safe mode with a usable store: SAFETY commands still run."""
        self.estopped = False
        self._running: set[str] = set()
        self.duplicates_suppressed = 0

    @property
    def safe_mode(self) -> bool:
        return bool(self.safe_mode_reason)

    @property
    def _store_usable(self) -> bool:
        return self._store is not None and (not self.safe_mode or self._safety_only)

    @property
    def highest_epoch(self) -> int:
        return self._store.highest_epoch if self._store is not None and self._store_usable else 0

    @property
    def last_applied_seq(self) -> int:
        return self._store.last_applied_seq if self._store is not None and self._store_usable else 0

    @property
    def paused(self) -> bool:
        return self._store is not None and self._store.paused

    def operation_missed(self, starts_at: float) -> bool:
        """An operation whose waves started at `starts_at` (orchestrator clock) was not applied here: its command
        was applied after its waves started, or a newer one was, otherwise."""
        return self._store is not None and self._store.operation_at < starts_at

    def set_paused(self, paused: bool) -> None:
        """Pause or resume (a `pause`/`resume` command, or a missed operation, runs this); persisted with the time.
        Raises StoreUnavailable (and enters safe mode) when it cannot be recorded."""
        if self._store is None:
            raise StoreUnavailable(self.safe_mode_reason or 'no dedup store')
        try:
            self._store.set_paused(paused, self.clock())
        except StoreUnavailable as exc:
            self.enter_safe_mode(exc)
            raise

    def enter_safe_mode(self, exc: StoreUnavailable) -> None:
        """The store failed: refuse every command from now on rather than risk running one twice."""
        self.safe_mode_reason = str(exc)
        self._safety_only = False

    def observe_epoch(self, epoch: int) -> None:
        """Fence older leaders as soon as a newer epoch is announced (leader lease), not only on commands."""
        if self._store is not None and self._store_usable:
            try:
                self._store.observe_epoch(epoch)
            except StoreUnavailable as exc:
                self.enter_safe_mode(exc)

    def _reply(self, command: Command, status: AckStatus, detail: str = '') -> IntakeDecision:
        return IntakeDecision(False, Ack.for_command(command, status, detail, self.clock()))

    def _structure_error(self, command: Command) -> str:
        if not command.command_id or len(command.command_id) > MAX_ID_LENGTH:
            return f'command_id must be 1..{MAX_ID_LENGTH} characters'
        if len(command.trace_id) > MAX_ID_LENGTH:
            return f'trace_id longer than {MAX_ID_LENGTH} characters'
        if command.agent_id != self.agent_id:
            return f'addressed to {command.agent_id[:MAX_ID_LENGTH]!r}, this is {self.agent_id!r}'
        if command.shard_id != self.shard_id:
            return f'shard {command.shard_id[:MAX_ID_LENGTH]!r} does not own this agent'
        if command.epoch <= 0 or command.epoch > MAX_SEQ:
            return 'epoch must be >= 1'
        if command.seq <= 0 or command.seq > MAX_SEQ:
            return 'seq must be >= 1'
        if command.attempt <= 0:
            return 'attempt must be >= 1'
        if not (math.isfinite(command.deadline) and math.isfinite(command.issued_at)):
            return 'issued_at and deadline must be finite'
        if command.deadline <= command.issued_at:
            return 'deadline must be after issued_at'
        return ''

    def receive(self, command: Command) -> IntakeDecision:
        """Decide what to do with one delivery of a command. Never raises for bad input."""
        error = self._structure_error(command)
        if error:
            return self._reply(command, AckStatus.REJECTED_INVALID, error)
        if self._store is None or not self._store_usable:
            return self._reply(command, AckStatus.REJECTED_SAFE_MODE, self.safe_mode_reason)
        try:
            return self._decide(command, self._store)
        except StoreUnavailable as exc:
            self.enter_safe_mode(exc)
            return self._reply(command, AckStatus.REJECTED_SAFE_MODE, self.safe_mode_reason)

    def _decide(self, command: Command, store: DedupStore) -> IntakeDecision:
        highest = store.highest_epoch
        if command.epoch < highest:
            # The ack names the epoch that fences the sender (not the command's): a leader steps down only for an
            # epoch newer than its own, so an ack that cannot name one (a forged one) fences nobody.
            stale = self._reply(
                command, AckStatus.REJECTED_STALE_EPOCH, f'epoch {command.epoch} < {highest} (fenced leader)'
            )
            return IntakeDecision(False, dataclasses.replace(stale.ack, epoch=highest))
        if command.epoch > highest:
            store.observe_epoch(command.epoch)
        # A command this agent already took is answered with what happened to it, even past its deadline: a late
        # re-delivery must not turn an executed command into REJECTED_EXPIRED.
        stored = store.lookup(command.command_id)
        if stored is not None:
            return self._answer_known(command, stored, store)
        now = self.clock()
        tolerance = self.settings.clock_skew_tolerance_sec
        if now > command.deadline + tolerance:
            late = now - command.deadline
            return self._reply(command, AckStatus.REJECTED_EXPIRED, f'deadline passed {late:.3f}s ago')
        if command.deadline - now > self.settings.max_ttl_sec + tolerance:
            return self._reply(command, AckStatus.REJECTED_INVALID, 'deadline absurdly far in the future')
        last = store.last_applied_seq
        if command.seq <= last:
            self.duplicates_suppressed += 1
            return self._reply(command, AckStatus.REJECTED_DUPLICATE, f'seq {command.seq} <= last applied {last}')
        if self.safe_mode and command.priority < Priority.SAFETY:
            return self._reply(command, AckStatus.REJECTED_SAFE_MODE, self.safe_mode_reason)
        if self.estopped and command.priority < Priority.SAFETY:
            return self._reply(command, AckStatus.REJECTED_ESTOPPED, 'e-stop engaged; only SAFETY commands run')
        if command.priority < Priority.HIGH and store.paused:
            return self._reply(command, AckStatus.REJECTED_PAUSED, PAUSED_DETAIL)
        try:
            args = self.kinds.validate(command.kind, command.args_json, command.priority)
        except InvalidCommand as exc:
            return self._reply(command, AckStatus.REJECTED_INVALID, str(exc))
        store.begin(command)
        self._running.add(command.command_id)
        return IntakeDecision(True, Ack.for_command(command, AckStatus.ACCEPTED, '', self.clock()), args)

    def _answer_known(self, command: Command, stored: StoredOutcome, store: DedupStore) -> IntakeDecision:
        self.duplicates_suppressed += 1
        if stored.status is not None:  # final
            return self._reply(command, stored.status, stored.detail)
        if command.command_id in self._running:
            return self._reply(command, AckStatus.ACCEPTED, 'already executing')
        # Started by an earlier boot and never finished: the crash interrupted it. Never run it again.
        detail = 'interrupted by an agent restart; not re-executed'
        store.finish(command.command_id, AckStatus.FAILED, detail)
        return self._reply(command, AckStatus.FAILED, detail)

    def may_start(self, command: Command) -> bool:
        """Last check right before the executor starts (the agent may have queued the command)."""
        return self.clock() <= command.deadline + self.settings.clock_skew_tolerance_sec

    def complete(self, command: Command, status: AckStatus, detail: str = '') -> Ack:
        """Persist the final status, then return the final ack to send. Raises StoreUnavailable (the
        outcome could not be persisted: the caller must not claim success)."""
        self._running.discard(command.command_id)
        if self._store is None:
            raise StoreUnavailable('no dedup store')
        try:
            self._store.finish(command.command_id, status, detail)
        except StoreUnavailable as exc:
            self.enter_safe_mode(exc)
            raise
        return Ack.for_command(command, status, detail, self.clock())

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._running)

"""The command trace model (G8): TraceRecord mirrors fleet_interfaces/TraceEvent, TraceSampler decides which
commands are traced, and build_timeline/render_timeline turn the hops of one command into what `fleetctl trace`
prints. Pure Python: nodes convert TraceEvent messages to TraceRecord and back (fleet_ros.trace_msgs)."""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from fleet_core import yaml_config
from fleet_core.model import Priority


class Hop(enum.IntEnum):
    """Values of fleet_interfaces/TraceEvent.hop, in causal order within one delivery attempt."""

    SUBMIT = 0
    ROUTE = 1
    DELIVER = 2
    RECEIVE = 3
    ACK = 4
    RETRY = 5
    EXPIRE = 6
    REJECT = 7
    OUTCOME = 8
    START = 9
    """Agent: the executor started (the command's *started* record is durable)."""
    FINISH = 10
    """Agent: execution ended; status is the agent's final ack status (its outcome is the leader's OUTCOME)."""


class TraceError(ValueError):
    """Trace records that cannot form a timeline (none for the command, or mixed commands)."""


class TraceConfigError(ValueError):
    """An invalid `tracing:` configuration block; the message names the key."""


# Statuses that make a command interesting whatever the sampling fraction (compared case-insensitively).
_FAILURE_STATUSES = frozenset({'FAILED', 'EXPIRED', 'REJECTED', 'CANCELLED'})
_DECISION_CACHE = 4096
# The last hop of a command at its emitter: the orchestrator's OUTCOME, the agent's FINISH.
_END_HOPS = frozenset({Hop.OUTCOME, Hop.FINISH})
# Hops that always force a command's trace to be kept.
_ALWAYS_HOPS = frozenset({Hop.RETRY, Hop.EXPIRE, Hop.REJECT})
# Statuses of a command doing fine (what nearly every hop carries), and the ROUTE hop's 'seq=N'.
_ORDINARY_STATUSES = frozenset({'', 'QUEUED', 'ADOPTED', 'SENT', 'RECEIVED', 'ACCEPTED', 'SUCCEEDED'})


class TraceRecord(NamedTuple):
    """One hop of one command; `stamp` is the emitter's UTC clock in seconds since the Unix epoch. A tuple: one
    is made for every hop of every command on the orchestrator's hot path."""

    command_id: str
    trace_id: str
    agent_id: str
    shard_id: str
    node: str
    hop: Hop
    stamp: float
    attempt: int = 0
    status: str = ''
    detail: str = ''

    @property
    def is_failure(self) -> bool:
        """A retry, expiry or rejection hop, or a hop whose status names a failure."""
        if (self.status in _ORDINARY_STATUSES or self.status.startswith('seq=')) and self.hop not in _ALWAYS_HOPS:
            return False  # the hot path: most hops of most commands
        status = self.status.upper()
        return (
            self.hop in _ALWAYS_HOPS
            or status in _FAILURE_STATUSES
            or status.startswith('REJECTED')
            or (self.hop == Hop.OUTCOME and status not in ('', 'SUCCEEDED'))
        )


# --------------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """The `tracing:` block of the fleet config.

    sample_fraction: share of ordinary (non-SAFETY, successful) submissions whose hops are published, 0..1.
    pending_commands: commands whose hops are held back while their fate is unknown (bounded memory).
    enabled: False turns tracing off entirely (for the overhead benchmark's baseline).
    """

    enabled: bool = True
    sample_fraction: float = 0.01
    pending_commands: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_fraction <= 1.0:
            raise TraceConfigError(f'tracing.sample_fraction must be within 0..1, got {self.sample_fraction!r}')
        if self.pending_commands < 0:
            raise TraceConfigError(f'tracing.pending_commands must be >= 0, got {self.pending_commands!r}')


def parse_trace_settings(raw: object, where: str = 'tracing') -> TraceSettings:
    """Validate a decoded `tracing:` mapping (None gives the defaults). Raises TraceConfigError naming the key."""
    source, _, section = where.rpartition(': ')
    return yaml_config.build(TraceSettings, raw, source, section, TraceConfigError, own_errors=(TraceConfigError,))


def trace_hash_fraction(trace_id: str) -> float:
    """A stable number in [0, 1) derived from the trace id: the same in every process and every run."""
    digest = hashlib.blake2b(trace_id.encode('utf-8'), digest_size=8).digest()
    return int.from_bytes(digest, 'big') / 2.0**64


def head_sampled(trace_id: str, priority: Priority, settings: TraceSettings) -> bool:
    """The decision every emitter (orchestrator or agent) can take alone, before a command's fate is known."""
    if not settings.enabled:
        return False
    if priority == Priority.SAFETY:
        return True
    return trace_hash_fraction(trace_id) < settings.sample_fraction


class TraceSampler:
    """Decides which hops an emitter publishes.

    Head sampling (SAFETY priority, or the trace id's hash below `sample_fraction`) keeps every hop of every
    command of a submission. Other commands' hops are held back per command (bounded, oldest dropped first):
    a failure, retry, expiry or rejection releases the held hops together with the new one and keeps the rest
    of that command; a successful OUTCOME drops them. So all hops of a command are kept or dropped together.

    `offer()` returns the records to publish now, in the order they were offered. Not thread-safe: call it
    from the thread that emits (the node's executor).
    """

    def __init__(self, settings: TraceSettings) -> None:
        self._settings = settings
        self._kept: OrderedDict[str, None] = OrderedDict()
        self._pending: OrderedDict[str, list[TraceRecord]] = OrderedDict()
        self._decisions: dict[str, bool] = {}
        self.dropped_commands = 0
        """Commands whose held hops were discarded (succeeded unsampled, or evicted)."""

    @property
    def settings(self) -> TraceSettings:
        return self._settings

    def _head_sampled(self, trace_id: str, priority: Priority) -> bool:
        # One hash per submission, not per hop: every command of a submission shares its trace id.
        if priority == Priority.SAFETY:
            return self._settings.enabled
        decision = self._decisions.get(trace_id)
        if decision is None:
            decision = head_sampled(trace_id, priority, self._settings)
            if len(self._decisions) >= _DECISION_CACHE:
                self._decisions.clear()
            self._decisions[trace_id] = decision
        return decision

    def _keep(self, command_id: str) -> None:
        self._kept[command_id] = None
        self._kept.move_to_end(command_id)
        while len(self._kept) > max(1, self._settings.pending_commands):
            self._kept.popitem(last=False)

    def offer(self, record: TraceRecord, priority: Priority | None = None) -> tuple[TraceRecord, ...]:
        """Offer one hop. `priority` is needed on the first hop of a command (later hops may omit it)."""
        if not self._settings.enabled:
            return ()
        cid = record.command_id
        if cid in self._kept:
            if record.hop in _END_HOPS:
                self._kept.pop(cid, None)
            return (record,)
        if priority is not None and self._head_sampled(record.trace_id, priority):
            held = self._pending.pop(cid, [])
            if record.hop not in _END_HOPS:
                self._keep(cid)
            return (*held, record)
        if record.is_failure:
            held = self._pending.pop(cid, [])
            if record.hop not in _END_HOPS:
                self._keep(cid)
            return (*held, record)
        if record.hop in _END_HOPS:
            if self._pending.pop(cid, None):
                self.dropped_commands += 1
            return ()
        if self._settings.pending_commands == 0:
            self.dropped_commands += 1
            return ()
        # The common case (an unsampled command doing fine): hold the hop. Commands are evicted oldest first by
        # their first held hop, so appending needs no reordering.
        holding = self._pending.get(cid)
        if holding is not None:
            holding.append(record)
            return ()
        self._pending[cid] = [record]
        while len(self._pending) > self._settings.pending_commands:
            self._pending.popitem(last=False)
            self.dropped_commands += 1
        return ()

    @property
    def pending(self) -> int:
        """Commands whose hops are currently held back."""
        return len(self._pending)


# --------------------------------------------------------------------------------------------- timeline


@dataclass(frozen=True, slots=True)
class TimelineStep:
    """One hop in a timeline; latencies in milliseconds. `skewed`: moved to respect causality (clock skew)."""

    record: TraceRecord
    since_previous_ms: float
    since_start_ms: float
    skewed: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    """The ordered hops of one command."""

    command_id: str
    trace_id: str
    agent_id: str
    shard_id: str
    steps: tuple[TimelineStep, ...]
    total_ms: float
    outcome: str | None
    """Status of the OUTCOME hop, else of an EXPIRE/REJECT hop; None while the command is in progress."""
    duplicates_dropped: int = 0
    skew_corrections: int = 0

    @property
    def complete(self) -> bool:
        return self.outcome is not None

    @property
    def attempts(self) -> int:
        return max((s.record.attempt for s in self.steps if s.record.hop == Hop.DELIVER), default=0)


def _identity(record: TraceRecord) -> tuple[object, ...]:
    return (record.hop, record.node, record.attempt, record.status, record.stamp, record.agent_id)


_AFTER_DELIVER = (Hop.RECEIVE, Hop.START, Hop.FINISH, Hop.ACK)
"""Hops that follow the DELIVER of their attempt, in causal order (the agent's three, then the leader's ACK)."""


def _causal_fix(ordered: list[TraceRecord]) -> tuple[list[TraceRecord], set[int]]:
    """Move a RECEIVE/START/FINISH/ACK that stamps before the DELIVER of its attempt (another node's clock) right
    after it, behind the hops of that attempt that causally precede it."""
    moved: set[int] = set()
    result = list(ordered)
    for rank, hop in enumerate(_AFTER_DELIVER):
        earlier = _AFTER_DELIVER[:rank]
        for record in [r for r in result if r.hop == hop and r.attempt > 0]:
            idx = result.index(record)
            deliver_idx = next(
                (i for i, r in enumerate(result) if r.hop == Hop.DELIVER and r.attempt == record.attempt), None
            )
            if deliver_idx is not None and idx < deliver_idx:
                result.pop(idx)
                deliver_idx -= 1
                insert_at = deliver_idx + 1
                # e.g. an ACK also goes after the RECEIVE, START and FINISH of its attempt
                while (
                    insert_at < len(result)
                    and result[insert_at].hop in earlier
                    and result[insert_at].attempt == record.attempt
                ):
                    insert_at += 1
                result.insert(insert_at, record)
                moved.add(id(record))
    return result, moved


def build_timeline(records: Iterable[TraceRecord], command_id: str) -> Timeline:
    """Order the hops of `command_id` (given in any order, from several nodes, possibly repeated).

    Records of other commands are ignored. Sorting is by stamp, hop order breaking ties; a RECEIVE or ACK that
    a skewed agent clock puts before its DELIVER is placed right after it and flagged. Raises TraceError when
    no record belongs to the command.
    """
    mine = [r for r in records if r.command_id == command_id]
    if not mine:
        raise TraceError(f'no trace events for command {command_id!r} (was it sampled out, or is the id wrong?)')
    unique: dict[tuple[object, ...], TraceRecord] = {}
    for record in mine:
        unique.setdefault(_identity(record), record)
    duplicates = len(mine) - len(unique)
    ordered = sorted(unique.values(), key=lambda r: (r.stamp, int(r.hop), r.attempt))
    ordered, moved = _causal_fix(ordered)
    steps: list[TimelineStep] = []
    start = ordered[0].stamp
    previous = start
    for record in ordered:
        steps.append(
            TimelineStep(
                record=record,
                since_previous_ms=(record.stamp - previous) * 1000.0,
                since_start_ms=(record.stamp - start) * 1000.0,
                skewed=id(record) in moved,
            )
        )
        previous = record.stamp
    outcome = next((r.status or r.hop.name for r in reversed(ordered) if r.hop == Hop.OUTCOME), None)
    if outcome is None:
        outcome = next((r.status or r.hop.name for r in reversed(ordered) if r.hop in (Hop.EXPIRE, Hop.REJECT)), None)
    first = ordered[0]
    return Timeline(
        command_id=command_id,
        trace_id=next((r.trace_id for r in ordered if r.trace_id), ''),
        agent_id=next((r.agent_id for r in ordered if r.agent_id), first.agent_id),
        shard_id=next((r.shard_id for r in ordered if r.shard_id), first.shard_id),
        steps=tuple(steps),
        total_ms=(max(r.stamp for r in ordered) - start) * 1000.0,
        outcome=outcome,
        duplicates_dropped=duplicates,
        skew_corrections=len(moved),
    )


def _ms(value: float) -> str:
    return f'{value:+.1f}' if value < 0 else f'{value:.1f}'


def render_timeline(timeline: Timeline) -> str:
    """The text `fleetctl trace` prints: a header, one line per hop with per-hop and cumulative latency, a total."""
    lines = [
        f'command {timeline.command_id}  trace {timeline.trace_id or "-"}  '
        f'agent {timeline.agent_id or "-"}  shard {timeline.shard_id or "-"}',
        f'{"t+ms":>9}  {"Δms":>8}  {"hop":<8} {"att":>3}  {"status":<22} {"node":<20} detail',
    ]
    for step in timeline.steps:
        r = step.record
        mark = ' *' if step.skewed else ''
        lines.append(
            f'{_ms(step.since_start_ms):>9}  {_ms(step.since_previous_ms):>8}  {r.hop.name:<8} '
            f'{r.attempt if r.attempt else "-":>3}  {r.status or "-":<22} {r.node or "-":<20} {r.detail}{mark}'.rstrip()
        )
    state = timeline.outcome if timeline.complete else 'IN PROGRESS (no outcome hop yet)'
    lines.append(
        f'total {timeline.total_ms:.1f} ms over {len(timeline.steps)} hops, {timeline.attempts} attempt(s): {state}'
    )
    if timeline.skew_corrections:
        lines.append(f'* {timeline.skew_corrections} hop(s) reordered: their node clock is behind the orchestrator')
    if timeline.duplicates_dropped:
        lines.append(f'({timeline.duplicates_dropped} duplicate event(s) ignored)')
    return '\n'.join(lines)


def group_by_command(records: Iterable[TraceRecord]) -> dict[str, list[TraceRecord]]:
    """Records keyed by command id, in input order (used for `fleetctl trace --trace-id`)."""
    grouped: dict[str, list[TraceRecord]] = {}
    for record in records:
        grouped.setdefault(record.command_id, []).append(record)
    return grouped

"""Outcome truth, judged against history: every outcome a shard announced, set beside what the agents durably
recorded as executed, and the rules that tie them (G1 at most once, G2 never late or fenced, G3 one true outcome).

Pure: the property tests, the system and chaos tests and the demo summary feed it records they gathered, and it
returns typed violations. It trusts the execution records (the robots' ground truth) and checks the announcements
against them, never the reverse."""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fleet_core.dedup_store import StoredOutcome
from fleet_core.model import AckStatus, Outcome

INTERRUPTED_DETAIL = 'interrupted by an agent restart'
"""How the agent intake words the FAILED it records for a command a crash interrupted (see intake.py)."""


class ExecResult(enum.Enum):
    """How one execution ended, as its agent recorded it."""

    SUCCEEDED = 'succeeded'
    FAILED = 'failed'
    CANCELLED = 'cancelled'
    INTERRUPTED = 'interrupted'
    """Cut short by an agent crash or restart; it may have had part of its effect."""
    UNKNOWN = 'unknown'
    """The record says it started and nothing more (a start-only log, or still running when history was read)."""


@dataclass(frozen=True, slots=True)
class Execution:
    """One start of a command's effect on a robot. Times are the agent host's UTC seconds; None when the source
    does not record them (the check that needs them is then skipped for this record)."""

    agent_id: str
    command_id: str
    epoch: int
    """The leader epoch of the delivery that started it (0: not recorded, e.g. a start-only test log; such records
    are not judged for fencing)."""
    started_at: float | None = None
    deadline: float | None = None
    """The deadline of the delivery that started it."""
    result: ExecResult = ExecResult.UNKNOWN
    finished_at: float | None = None
    seq: int = 0
    attempt: int = 0
    fence_epoch: int = 0
    """The agent's highest seen epoch just before it started (0: not recorded). Above `epoch` means it ran under
    a fenced leader."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """One terminal outcome as a shard announced it (CommandOutcome); a command may be announced more than once
    (a new leader re-announces recent outcomes), never with different outcomes."""

    command_id: str
    agent_id: str
    outcome: Outcome
    detail: str = ''
    stamp: float = 0.0


@dataclass(frozen=True, slots=True)
class Submission:
    """A command the shard accepted from a submitter: it must get an outcome."""

    command_id: str
    agent_id: str
    deadline: float | None = None


class ViolationKind(enum.Enum):
    MISSING_OUTCOME = 'missing_outcome'
    """Submitted, never announced."""
    CONFLICTING_OUTCOMES = 'conflicting_outcomes'
    """Announced with two different outcomes."""
    WRONG_OUTCOME = 'wrong_outcome'
    """The announced outcome contradicts what was executed (e.g. REJECTED but it ran; SUCCEEDED but it never did)."""
    DOUBLE_EXECUTION = 'double_execution'
    """Started more than once."""
    LATE_EXECUTION = 'late_execution'
    """Started after its deadline plus the clock-skew tolerance."""
    FENCED_EXECUTION = 'fenced_execution'
    """Started under an epoch older than one its agent had already seen."""
    WRONG_AGENT = 'wrong_agent'
    """Executed or announced for an agent other than the one it was submitted for."""
    UNSUBMITTED_EXECUTION = 'unsubmitted_execution'
    """Executed, but no submitter ever had it accepted (e.g. a forged journal entry)."""


@dataclass(frozen=True, slots=True)
class Violation:
    kind: ViolationKind
    command_id: str
    agent_id: str
    detail: str

    def __str__(self) -> str:
        return f'{self.kind.value}: {self.command_id} on {self.agent_id}: {self.detail}'


@dataclass(frozen=True, slots=True)
class HistoryVerdict:
    """The checker's answer: counts of what it saw and every violation, in a stable order."""

    commands: int
    executions: int
    announced: int
    violations: tuple[Violation, ...]

    @property
    def ok(self) -> bool:
        return not self.violations

    def of(self, kind: ViolationKind) -> tuple[Violation, ...]:
        return tuple(v for v in self.violations if v.kind == kind)

    def counts(self) -> dict[str, int]:
        """Violations per kind, every kind present (0 when none): for JSON summaries."""
        found = dict.fromkeys((k.value for k in ViolationKind), 0)
        for violation in self.violations:
            found[violation.kind.value] += 1
        return found

    def render(self, limit: int = 20) -> str:
        lines = [str(v) for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f'... and {len(self.violations) - limit} more')
        return '\n'.join(lines)


_MAY_END_AS: dict[Outcome, frozenset[ExecResult]] = {
    # The single execution an outcome allows, by how it ended. UNKNOWN fits every executed outcome: the record
    # cannot contradict it. FAILED covers an outcome the shard could not learn (all acks lost): any result fits.
    Outcome.SUCCEEDED: frozenset({ExecResult.SUCCEEDED, ExecResult.UNKNOWN}),
    Outcome.FAILED: frozenset(ExecResult),
    Outcome.CANCELLED: frozenset({ExecResult.CANCELLED, ExecResult.UNKNOWN}),
    Outcome.REJECTED: frozenset(),
    Outcome.EXPIRED: frozenset(),
}


def check_history(
    *,
    announcements: Iterable[Announcement],
    executions: Iterable[Execution],
    submissions: Iterable[Submission] | None = None,
    tolerance_sec: float = 0.0,
) -> HistoryVerdict:
    """Judge a whole history. `submissions=None` when the submitted set is not known: no command is then reported
    missing or unsubmitted. `tolerance_sec` is the agents' clock-skew tolerance on deadlines."""
    submitted: dict[str, Submission] = {}
    for submission in submissions or ():
        submitted.setdefault(submission.command_id, submission)
    announced: dict[str, list[Announcement]] = defaultdict(list)
    n_announced = 0
    for announcement in announcements:
        announced[announcement.command_id].append(announcement)
        n_announced += 1
    ran: dict[str, list[Execution]] = defaultdict(list)
    n_executions = 0
    for execution in executions:
        ran[execution.command_id].append(execution)
        n_executions += 1

    violations: list[Violation] = []
    for command_id in sorted(set(submitted) | set(announced) | set(ran)):
        violations.extend(
            _check_command(
                command_id,
                submitted.get(command_id),
                announced.get(command_id, []),
                ran.get(command_id, []),
                tolerance_sec,
                submissions is not None,
            )
        )
    violations.extend(_fenced(ran))
    violations.sort(key=lambda v: (v.command_id, v.kind.value, v.agent_id, v.detail))
    return HistoryVerdict(
        commands=len(set(submitted) | set(announced)),
        executions=n_executions,
        announced=n_announced,
        violations=tuple(violations),
    )


def _check_command(
    command_id: str,
    submission: Submission | None,
    announced: list[Announcement],
    ran: list[Execution],
    tolerance_sec: float,
    know_submissions: bool,
) -> list[Violation]:
    found: list[Violation] = []
    agent = submission.agent_id if submission else (announced[0].agent_id if announced else ran[0].agent_id)

    def flag(kind: ViolationKind, detail: str, on: str = agent) -> None:
        found.append(Violation(kind, command_id, on, detail))

    if know_submissions and submission is None and ran:
        flag(ViolationKind.UNSUBMITTED_EXECUTION, f'executed {len(ran)} time(s), never submitted')
    if submission is not None:
        for other in sorted({e.agent_id for e in ran} - {submission.agent_id}):
            flag(ViolationKind.WRONG_AGENT, f'submitted for {submission.agent_id}, executed on {other}', other)
        for other in sorted({a.agent_id for a in announced} - {submission.agent_id}):
            flag(ViolationKind.WRONG_AGENT, f'submitted for {submission.agent_id}, announced for {other}', other)
        if not announced:
            flag(ViolationKind.MISSING_OUTCOME, f'submitted, never announced ({_ran(ran)})')

    outcomes = list(dict.fromkeys(a.outcome for a in announced))
    if len(outcomes) > 1:
        flag(ViolationKind.CONFLICTING_OUTCOMES, 'announced ' + ' then '.join(o.name for o in outcomes))
    if len(ran) > 1:
        flag(ViolationKind.DOUBLE_EXECUTION, f'started {len(ran)} times: {_starts(ran)}')
    for outcome in outcomes:
        reason = _wrong(outcome, ran)
        if reason:
            flag(ViolationKind.WRONG_OUTCOME, f'announced {outcome.name}, but {reason}')

    deadline = submission.deadline if submission is not None and submission.deadline is not None else None
    for execution in ran:
        limit = deadline if deadline is not None else execution.deadline
        if execution.started_at is not None and limit is not None and execution.started_at > limit + tolerance_sec:
            late = execution.started_at - limit
            flag(
                ViolationKind.LATE_EXECUTION,
                f'started {late:.3f}s after its deadline (tolerance {tolerance_sec}s)',
                execution.agent_id,
            )
    return found


def _wrong(outcome: Outcome, ran: list[Execution]) -> str:
    """Why `outcome` contradicts the executions (empty when it does not). Counts above one are reported as a
    double execution, not here."""
    allowed = _MAY_END_AS[outcome]
    if not ran:
        return 'it never ran' if outcome == Outcome.SUCCEEDED else ''
    if not allowed:
        return f'it ran ({_ran(ran)})'
    if len(ran) == 1 and ran[0].result not in allowed:
        return f'its execution ended {ran[0].result.value}'
    return ''


def _fenced(ran: Mapping[str, list[Execution]]) -> list[Violation]:
    """Executions under an epoch older than one their agent had already seen: stated by the record (fence_epoch),
    or shown by the agent's own history (it started work of a newer epoch earlier; agents persist the highest
    epoch they saw, so it can never run an older one again)."""
    by_agent: dict[str, list[Execution]] = defaultdict(list)
    found = []
    for executions in ran.values():
        for execution in executions:
            if execution.fence_epoch > execution.epoch:
                found.append(
                    Violation(
                        ViolationKind.FENCED_EXECUTION,
                        execution.command_id,
                        execution.agent_id,
                        f'ran under epoch {execution.epoch}, agent had seen {execution.fence_epoch}',
                    )
                )
            elif execution.started_at is not None and execution.epoch > 0:
                by_agent[execution.agent_id].append(execution)
    for agent_id, executions in by_agent.items():
        highest, since = 0, ''
        for execution in sorted(executions, key=lambda e: (e.started_at, e.epoch)):
            if execution.epoch < highest:
                found.append(
                    Violation(
                        ViolationKind.FENCED_EXECUTION,
                        execution.command_id,
                        agent_id,
                        f'ran under epoch {execution.epoch} after {since} ran under epoch {highest}',
                    )
                )
            elif execution.epoch > highest:
                highest, since = execution.epoch, execution.command_id
    return found


def _ran(ran: list[Execution]) -> str:
    if not ran:
        return 'never ran'
    return ', '.join(f'{e.result.value} on {e.agent_id} (epoch {e.epoch}, seq {e.seq})' for e in ran)


def _starts(ran: list[Execution]) -> str:
    return '; '.join(f'{e.agent_id} epoch {e.epoch} seq {e.seq} attempt {e.attempt} at {e.started_at}' for e in ran)


_RESULT_OF_STATUS = {
    AckStatus.SUCCEEDED: ExecResult.SUCCEEDED,
    AckStatus.FAILED: ExecResult.FAILED,
    AckStatus.CANCELLED: ExecResult.CANCELLED,
}


def execution_from_store(
    agent_id: str, stored: StoredOutcome, *, started_at: float | None = None, deadline: float | None = None
) -> Execution:
    """An agent's dedup-store row (a command it began) as an execution. The store keeps no times: pass them when
    known. A row still open, or closed as interrupted by a restart, is an INTERRUPTED (or not yet finished)
    execution."""
    if stored.status is None:
        result = ExecResult.UNKNOWN
    elif stored.status == AckStatus.FAILED and stored.detail.startswith(INTERRUPTED_DETAIL):
        result = ExecResult.INTERRUPTED
    else:
        result = _RESULT_OF_STATUS.get(stored.status, ExecResult.UNKNOWN)
    return Execution(
        agent_id=agent_id,
        command_id=stored.command_id,
        epoch=stored.epoch,
        started_at=started_at,
        deadline=deadline,
        result=result,
        seq=stored.seq,
    )


def result_of_status_name(name: str) -> ExecResult:
    """An execution log's end status ('SUCCEEDED', 'FAILED', 'CANCELLED', ...) as a result; UNKNOWN otherwise."""
    try:
        return ExecResult[name.upper()]
    except KeyError:
        return ExecResult.UNKNOWN

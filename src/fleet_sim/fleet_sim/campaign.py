"""The randomized chaos campaign, pure part: a seed's fault schedule (drawn deterministically from the seed), the
history a run leaves (the operator's view and the robots' execution logs) turned into the outcome-truth checker's
input, and the per-seed verdicts folded into the campaign's JSON line.

The processes, namespaces and timing live in fleet_sim.campaign_rig; the operator process in
fleet_sim.campaign_driver."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleet_core.history import (
    Announcement,
    ExecResult,
    Execution,
    HistoryVerdict,
    Submission,
    ViolationKind,
    check_history,
    result_of_status_name,
)
from fleet_core.model import Outcome
from fleet_sim.execlog import read_records

ORCHESTRATOR_OPS = ('kill_leader', 'kill_standby', 'kill_both')
"""kill_leader: SIGKILL the shard's leader (restarted as a standby after `duration`); kill_standby: the same for
the replica that is not leading; kill_both: SIGKILL both, restart both on their journals after `duration`."""
LINK_OPS = ('cut', 'cut_in', 'cut_out')
"""cut: the robot host's link down both ways; cut_in: nothing reaches the robot host (commands, leases);
cut_out: nothing leaves it (acks, heartbeats). One-way cuts need network namespaces."""
OTHER_OPS = ('kill_host', 'replay', 'skew', 'start_standby')
"""kill_host: SIGKILL a robot host process, restart it on its stores after `duration`; replay: re-deliver `value`
captured commands twice each in shuffled order (duplicated and reordered deliveries); skew: offset the host's
agents' clocks by `value` seconds (inside the intake's tolerance) for `duration`; start_standby: the shard's
second replica starts only now (a late standby)."""
DRIVER_OPS = frozenset({'replay', 'skew'})
"""Carried out by the operator process (they act on the ROS graph); the rest by the rig."""


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    """Seconds after the start of the fault window."""
    op: str
    target: str
    """A shard ('site/shard') for orchestrator ops and start_standby, a robot host name otherwise."""
    duration: float = 0.0
    value: float = 0.0

    def describe(self) -> str:
        extra = f' for {self.duration:.1f}s' if self.duration else ''
        value = f' value={self.value:g}' if self.value else ''
        return f't+{self.at:.1f}s {self.op} {self.target}{extra}{value}'


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    window_sec: float
    events: tuple[Event, ...]

    def late_standby(self, shard: str) -> bool:
        return any(e.op == 'start_standby' and e.target == shard for e in self.events)

    def to_json(self) -> str:
        return json.dumps(
            {'seed': self.seed, 'window_sec': self.window_sec, 'events': [asdict(e) for e in self.events]}
        )

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        raw = json.loads(text)
        return cls(int(raw['seed']), float(raw['window_sec']), tuple(Event(**e) for e in raw['events']))

    def lines(self) -> list[str]:
        return [e.describe() for e in self.events]


def draw_schedule(
    seed: int,
    *,
    window_sec: float,
    shards: Sequence[str],
    hosts: Sequence[str],
    one_way_cuts: bool,
    skew_limit_sec: float,
) -> Schedule:
    """The faults of one seed: the same seed always gives the same schedule. Every seed has an orchestrator fault
    per shard (rotating through the three kinds with the seed), link cuts, a duplicated/reordered redelivery and a
    clock skew; a robot host kill on most seeds and a late standby on some. Orchestrator faults are at least
    `spacing` apart so a restarted replica can catch up before the next one."""
    rng = random.Random(seed)
    events: list[Event] = []
    latest = window_sec - 6.0
    for index, shard in enumerate(shards):
        start = 3.0
        if rng.random() < 0.35:
            late = round(rng.uniform(2.0, min(8.0, window_sec / 3)), 1)
            events.append(Event(late, 'start_standby', shard))
            start = late + 5.0
        first = ORCHESTRATOR_OPS[(seed + index) % len(ORCHESTRATOR_OPS)]
        ops = [first]
        if rng.random() < 0.6:
            ops.append(rng.choice(ORCHESTRATOR_OPS))
        spacing = 8.0
        at = rng.uniform(start, start + 3.0)
        for op in ops:
            if at > latest:
                break
            events.append(Event(round(at, 1), op, shard, duration=round(rng.uniform(0.5, 2.5), 1)))
            at += spacing + rng.uniform(0.0, 3.0)
    link_ops = LINK_OPS if one_way_cuts else ('cut',)
    for _ in range(rng.randint(2, 3)):
        op = rng.choice(link_ops)
        events.append(
            Event(round(rng.uniform(1.0, latest), 1), op, rng.choice(hosts), duration=round(rng.uniform(1.0, 4.0), 1))
        )
    if rng.random() < 0.75:
        events.append(
            Event(round(rng.uniform(2.0, latest), 1), 'kill_host', rng.choice(hosts), round(rng.uniform(0.5, 3.0), 1))
        )
    for _ in range(rng.randint(1, 2)):
        events.append(Event(round(rng.uniform(2.0, latest), 1), 'replay', '*', value=float(rng.randint(4, 12))))
    offset = round(rng.uniform(-1.0, 1.0) * 0.8 * skew_limit_sec, 3)
    events.append(
        Event(round(rng.uniform(1.0, latest), 1), 'skew', rng.choice(hosts), round(rng.uniform(3, 8), 1), offset)
    )
    events.sort(key=lambda e: (e.at, e.op, e.target))
    return Schedule(seed, window_sec, tuple(events))


# ------------------------------------------------------------------------------------------------- history


def executions_from_logs(paths: Iterable[Path]) -> list[Execution]:
    """Every start in the simulator hosts' execution logs, paired with the end that followed it (same agent and
    command). Times are the agent's clock (what the intake's deadline check uses); a start without an end (still
    running, or its host was killed) is UNKNOWN."""
    starts: list[dict[str, Any]] = []
    ends: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in read_records(paths):
        if record.get('ev') == 'start':
            starts.append(record)
        elif record.get('ev') == 'end':
            ends[(str(record['agent']), str(record['command_id']))].append(record)
    found = []
    for start in starts:
        key = (str(start['agent']), str(start['command_id']))
        end = ends[key].pop(0) if ends[key] else None
        found.append(
            Execution(
                agent_id=key[0],
                command_id=key[1],
                epoch=int(start['epoch']),
                started_at=float(start.get('agent_clock', start['wall'])),
                deadline=float(start['deadline']),
                result=result_of_status_name(str(end['status'])) if end else ExecResult.UNKNOWN,
                finished_at=float(end['wall']) if end else None,
                seq=int(start['seq']),
                attempt=int(start['attempt']),
            )
        )
    return found


def announcements_from(records: Iterable[Sequence[Any]]) -> list[Announcement]:
    """The driver's outcome records: [command_id, agent_id, outcome, detail, stamp, source]."""
    return [Announcement(str(r[0]), str(r[1]), Outcome(int(r[2])), str(r[3]), float(r[4])) for r in records]


def judge(driver_result: Mapping[str, Any], exec_logs: Iterable[Path], tolerance_sec: float) -> HistoryVerdict:
    """The whole history of one seed: every command the shard accepted (submit answers, the journal topic and the
    leader's own journal through GetOutcomes), every announced outcome (outcome topic and GetOutcomes), every
    execution the robots recorded."""
    submissions = [Submission(str(c), str(a)) for c, a in driver_result['submissions']]
    return check_history(
        announcements=announcements_from(driver_result['announcements']),
        executions=executions_from_logs(exec_logs),
        submissions=submissions,
        tolerance_sec=tolerance_sec,
    )


# ------------------------------------------------------------------------------------------------- verdicts

LOST = (ViolationKind.MISSING_OUTCOME,)
WRONG = (ViolationKind.WRONG_OUTCOME, ViolationKind.CONFLICTING_OUTCOMES, ViolationKind.WRONG_AGENT)
DOUBLE = (ViolationKind.DOUBLE_EXECUTION,)
STALE = (ViolationKind.LATE_EXECUTION, ViolationKind.FENCED_EXECUTION)


@dataclass(slots=True)
class SeedResult:
    seed: int
    schedule: Schedule
    commands: int = 0
    executions: int = 0
    lost: int = 0
    wrong_outcomes: int = 0
    double_executions: int = 0
    stale_executions: int = 0
    leader_changes: int = 0
    takeovers_s: list[float] = field(default_factory=list)
    cold_starts_s: list[float] = field(default_factory=list)
    cold_elections_s: list[float] = field(default_factory=list)
    """Of each cold start: from the first restarted replica's activation (its process up and configured) to the
    first lease; the rest of cold_starts_s is process start, which grows with the host's load."""
    missions: tuple[int, int] = (0, 0)
    violations: list[dict[str, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    unqueryable: list[str] = field(default_factory=list)
    """Accepted and announced, but unknown to the leader's journal at the end (GetOutcomes STATE_UNKNOWN): the
    outcome was decided by a replica whose journal the final leader never copied. Not a G1-G3 violation (the
    outcome was announced and is checked), but the fate cannot be looked up by id: reported as a finding."""

    def add_verdict(self, verdict: HistoryVerdict) -> None:
        self.commands, self.executions = verdict.commands, verdict.executions
        self.lost = sum(len(verdict.of(k)) for k in LOST)
        self.wrong_outcomes = sum(len(verdict.of(k)) for k in WRONG)
        self.double_executions = sum(len(verdict.of(k)) for k in DOUBLE)
        self.stale_executions = sum(len(verdict.of(k)) for k in STALE)
        for violation in verdict.violations:
            self.violate(violation.kind.value, str(violation))

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append({'seed': self.seed, 'kind': kind, 'detail': detail})

    @property
    def failed(self) -> bool:
        return bool(self.violations)


def leader_changes(leases: Mapping[str, Sequence[Sequence[Any]]]) -> int:
    """Lease holder changes seen per shard ([received_at, leader_id, epoch] in arrival order), summed: the first
    leader of a shard is not a change."""
    return sum(max(0, len({(str(s[1]), int(s[2])) for s in seen}) - 1) for seen in leases.values())


def first_lease_after(seen: Sequence[Sequence[Any]], since: float, above_epoch: int) -> float | None:
    """Seconds from `since` (wall) to the first lease with an epoch above `above_epoch` received after it."""
    for received_at, _leader, epoch in seen:
        if int(epoch) > above_epoch and float(received_at) >= since:
            return float(received_at) - since
    return None


def cold_start_interrupted(restarted_at: float, first_lease: float | None, next_restart: float | None) -> bool:
    """A cold restart whose first lease (seconds after it, None: none) came only after the shard was restarted
    again: it was killed before any replica led (its processes were still starting), so the wait belongs to the next
    restart and is not this one's cold start."""
    if next_restart is None:
        return False
    return first_lease is None or restarted_at + first_lease > next_restart


ACTIVE_MARK = 'active: eligible to lead'
"""What an orchestrator logs once it is configured and active (its process start is over)."""

_LOG_STAMP = re.compile(r'\[(\d+\.\d+)\]')


def first_mark_after(lines: Iterable[str], mark: str, since: float) -> float | None:
    """Wall time of the first ROS log line holding `mark` stamped at or after `since` ('[INFO] [<sec>.<nsec>] ...')."""
    for line in lines:
        if mark in line and (found := _LOG_STAMP.search(line)) and float(found.group(1)) >= since:
            return float(found.group(1))
    return None


def campaign_line(results: Sequence[SeedResult], *, hosts: str, extra: Mapping[str, object]) -> dict[str, object]:
    """The campaign's JSON line: counts summed over the seeds, the slowest hot takeover, every violation (with the
    failing seeds' schedules so they can be re-run with --seed)."""
    takeovers = [t for r in results for t in r.takeovers_s]
    cold = [t for r in results for t in r.cold_starts_s]
    elections = [t for r in results for t in r.cold_elections_s]
    failing = [r for r in results if r.failed]
    line: dict[str, object] = {
        'seeds': len(results),
        'commands': sum(r.commands for r in results),
        'executions': sum(r.executions for r in results),
        'lost': sum(r.lost for r in results),
        'wrong_outcomes': sum(r.wrong_outcomes for r in results),
        'double_executions': sum(r.double_executions for r in results),
        'stale_executions': sum(r.stale_executions for r in results),
        'leader_changes': sum(r.leader_changes for r in results),
        'max_takeover_s': round(max(takeovers), 2) if takeovers else None,
        'takeovers': len(takeovers),
        'max_cold_start_s': round(max(cold), 2) if cold else None,
        'max_cold_election_s': round(max(elections), 2) if elections else None,
        'missions_finished': sum(r.missions[0] for r in results),
        'missions_started': sum(r.missions[1] for r in results),
        'hosts': hosts,
        'unqueryable_outcomes': sum(len(r.unqueryable) for r in results),
        'findings': [
            {
                'seed': r.seed,
                'kind': 'outcome_not_queryable',
                'commands': len(r.unqueryable),
                'example': r.unqueryable[0],
            }
            for r in results
            if r.unqueryable
        ],
        'violations': [v for r in results for v in r.violations],
        'failing_seeds': {str(r.seed): r.schedule.lines() for r in failing},
        'seed_list': [r.seed for r in results],
        'seconds_per_seed': round(sum(r.elapsed_s for r in results) / max(1, len(results)), 1),
    }
    line.update(extra)
    return line

"""The demo's verdict: counts from the shard streams and the execution logs, the outcome-truth checker's judgement of
the whole history, the invariants, a table and a JSON line."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet_core.history import Announcement, Execution, HistoryVerdict, Submission, check_history
from fleet_core.model import Outcome
from fleet_core.stats import percentile
from fleet_sim.execlog import ExecutionAudit


@dataclass(frozen=True, slots=True)
class OutcomeTally:
    commands: int
    by_outcome: dict[str, int]
    retries: int
    missing: tuple[str, ...]
    conflicting: tuple[str, ...]
    """Announced with different outcomes: a violation."""
    repeated: tuple[str, ...]
    """Announced more than once with the same outcome (a new leader re-announces recent outcomes): harmless."""
    latency_ms: tuple[float, ...]


def tally_outcomes(journal: Iterable[str], outcomes: Mapping[str, list[tuple[int, int, float]]]) -> OutcomeTally:
    """`outcomes[command_id]` lists (outcome, attempts, latency_ms) as received. Every journaled command must have
    exactly one outcome: `missing` have none, `conflicting` more than one value; `repeated` got the same value again."""
    ids = list(dict.fromkeys(journal))
    counts: Counter[str] = Counter()
    retries = 0
    latencies = []
    for command_id in ids:
        received = outcomes.get(command_id, [])
        if not received:
            continue
        outcome, attempts, latency = received[0]
        counts[Outcome(outcome).name.lower()] += 1
        retries += max(0, attempts - 1)
        latencies.append(latency)
    return OutcomeTally(
        commands=len(ids),
        by_outcome={o.name.lower(): counts.get(o.name.lower(), 0) for o in Outcome},
        retries=retries,
        missing=tuple(c for c in ids if not outcomes.get(c)),
        conflicting=tuple(c for c in ids if len({o[0] for o in outcomes.get(c, [])}) > 1),
        repeated=tuple(c for c in ids if len(outcomes.get(c, [])) > len({o[0] for o in outcomes.get(c, [])})),
        latency_ms=tuple(latencies),
    )


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """One command as a replica's shard journal recorded it (outcome None: not decided there)."""

    agent_id: str
    kind: str
    outcome: int | None
    attempts: int
    latency_ms: float


def read_shard_journals(paths: Iterable[Path]) -> dict[str, list[JournalRecord]]:
    """Every command the replicas' shard journals recorded (`shards/<site>/<shard>/<replica>/journal.db` of a run's
    state dir), one record per replica. The demo's observer follows the journal and outcome topics, which drop
    samples when its reader falls behind on a loaded host (a command 'executed, never submitted'); the journals hold
    every accepted command, written before anyone heard of it, and every decided outcome (what GetOutcomes serves)."""
    found: dict[str, list[JournalRecord]] = {}
    for path in paths:
        db = sqlite3.connect(str(path), timeout=10.0)
        try:
            rows = db.execute('SELECT command_id, agent_id, kind, outcome, attempts, latency_ms FROM commands')
            for command_id, agent_id, kind, outcome, attempts, latency in rows:
                found.setdefault(str(command_id), []).append(
                    JournalRecord(str(agent_id), str(kind), outcome, int(attempts or 0), float(latency or 0.0))
                )
        finally:
            db.close()
    return found


def merge_journals(
    journal: dict[str, tuple[str, str]],
    outcomes: dict[str, list[tuple[int, int, float]]],
    recorded: Mapping[str, Sequence[JournalRecord]],
) -> None:
    """Add what the shard journals recorded to what the observer saw on the topics (in place): commands it missed,
    and decided outcomes of commands it saw no outcome for. A decided outcome that differs from one announced is
    added too, so that the disagreement is counted as conflicting, never hidden."""
    for command_id, records in recorded.items():
        # An outcome-only row (a replica that saw the outcome, not the command) names no kind.
        accepted = next((r for r in records if r.kind), None)
        if accepted is not None:
            journal.setdefault(command_id, (accepted.agent_id, accepted.kind))
        heard = outcomes.setdefault(command_id, [])
        seen = {o[0] for o in heard}
        for record in records:
            if record.outcome is not None and (not heard or record.outcome not in seen):
                heard.append((record.outcome, record.attempts, record.latency_ms))
                seen.add(record.outcome)
        if not heard:
            del outcomes[command_id]


AGENT_RUN_KINDS = frozenset({'stop', 'pause', 'resume'})
"""Kinds an agent carries out itself, never through the executor that writes the execution log: their outcomes cannot
be judged against it (they are still counted by tally_outcomes)."""

VIOLATIONS_LISTED = 20


def judge_history(
    *,
    journal: Mapping[str, tuple[str, str]],
    outcomes: Mapping[str, Sequence[int]],
    executions: Iterable[Execution],
    tolerance_sec: float,
) -> HistoryVerdict:
    """Every journaled command (`journal[command_id] = (agent_id, kind)`) with every outcome announced for it
    (`outcomes[command_id]`, as received), judged against what the robots' execution logs say they ran."""
    judged = {c: agent for c, (agent, kind) in journal.items() if kind not in AGENT_RUN_KINDS}
    return check_history(
        announcements=[
            Announcement(c, judged[c], Outcome(o)) for c, values in outcomes.items() if c in judged for o in values
        ],
        executions=executions,
        submissions=[Submission(c, agent) for c, agent in judged.items()],
        tolerance_sec=tolerance_sec,
    )


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """A lease with a newer epoch than any seen before on the shard (the first lease is not a change)."""

    shard: str
    at: float
    leader_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class InjectedKill:
    shard: str
    at: float
    epoch: int


def leader_changes(leases: Mapping[str, Sequence[tuple[float, str, int]]]) -> list[LeaderChange]:
    """`leases[shard]` lists (received_at, leader_id, epoch) in arrival order. An older or repeated epoch (a latched
    lease of a fenced leader delivered late) is not a change."""
    changes = []
    for shard, seen in leases.items():
        newest: int | None = None
        for at, leader_id, epoch in seen:
            if newest is not None and epoch > newest:
                changes.append(LeaderChange(shard, at, leader_id, epoch))
            newest = epoch if newest is None else max(newest, epoch)
    return changes


def unexpected_leader_changes(changes: Iterable[LeaderChange], kills: Iterable[InjectedKill]) -> list[LeaderChange]:
    """Changes not explained by an injected leader kill: each kill explains the first change of its shard to a newer
    epoch at or after it. Anything else is a lease that lapsed (or an election race) without a fault."""
    unexplained = sorted(changes, key=lambda c: c.at)
    for kill in kills:
        for change in unexplained:
            if change.shard == kill.shard and change.at >= kill.at and change.epoch > kill.epoch:
                unexplained.remove(change)
                break
    return unexplained


def invariant_failures(summary: Mapping[str, object]) -> list[str]:
    """Human-readable reasons the run violates a guarantee (empty when it holds)."""
    reasons = []
    if summary['duplicates_executed']:
        reasons.append(f'{summary["duplicates_executed"]} command(s) executed more than once (G1)')
    if summary['stale_executions']:
        reasons.append(f'{summary["stale_executions"]} execution(s) started after their deadline (G2)')
    if summary['missing_outcomes']:
        reasons.append(f'{summary["missing_outcomes"]} command(s) without a terminal outcome (G3)')
    if summary['conflicting_outcomes']:
        reasons.append(f'{summary["conflicting_outcomes"]} command(s) announced with different outcomes (G3)')
    if not summary['mission_complete']:
        reasons.append(f'mission incomplete: {summary["robots_done"]}/{summary["robots"]} robots finished their plan')
    if summary.get('takeover_s') is None and summary.get('leader_killed'):
        reasons.append('no standby took over the killed leader (G7)')
    unexpected = summary.get('unexpected_leader_changes')
    if isinstance(unexpected, list) and unexpected:
        reasons.append(f'{len(unexpected)} leadership change(s) without an injected fault (G7), first: {unexpected[0]}')
    if summary.get('history_violations'):
        listed = summary.get('violations') or ['?']
        first = listed[0] if isinstance(listed, list) else listed
        reasons.append(
            f'{summary["history_violations"]} outcome-truth violation(s) against the execution logs (G1-G3), '
            f'first: {first}'
        )
    return reasons


def build_summary(
    *,
    robots: int,
    tally: OutcomeTally,
    ack_ms: Iterable[float],
    execution: ExecutionAudit,
    duplicates_suppressed: int,
    takeover_s: float | None,
    extra: Mapping[str, object],
    history: HistoryVerdict | None = None,
) -> dict[str, object]:
    acks = list(ack_ms)
    summary: dict[str, object] = {
        'robots': robots,
        'commands': tally.commands,
        'succeeded': tally.by_outcome['succeeded'],
        'failed': tally.by_outcome['failed'],
        'expired': tally.by_outcome['expired'],
        'rejected': tally.by_outcome['rejected'],
        'cancelled': tally.by_outcome['cancelled'],
        'retries': tally.retries,
        'duplicates_suppressed': duplicates_suppressed,
        'duplicates_executed': execution.duplicates_executed,
        'stale_executions': execution.stale_executions,
        'executions': execution.executions,
        'missing_outcomes': len(tally.missing),
        'conflicting_outcomes': len(tally.conflicting),
        'reannounced_outcomes': len(tally.repeated),
        'ack_p50_ms': round(percentile(acks, 50), 1),
        'ack_p99_ms': round(percentile(acks, 99), 1),
        'outcome_p50_ms': round(percentile(tally.latency_ms, 50), 1),
        'outcome_p99_ms': round(percentile(tally.latency_ms, 99), 1),
        'takeover_s': None if takeover_s is None else round(takeover_s, 2),
    }
    if history is not None:
        summary['history_violations'] = len(history.violations)
        summary['history'] = history.counts()
        summary['violations'] = [str(v) for v in history.violations[:VIOLATIONS_LISTED]]
    summary.update(extra)
    return summary


def render_table(summary: Mapping[str, object]) -> str:
    width = max(len(k) for k in summary)
    lines = ['-' * (width + 24)]
    for key, value in summary.items():
        if isinstance(value, dict | list):
            continue
        lines.append(f'{key:<{width}}  {value}')
    lines.append('-' * (width + 24))
    return '\n'.join(lines)

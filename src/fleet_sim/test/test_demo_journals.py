"""The demo's verdict counts what the replicas' shard journals recorded, not only what its observer heard on the
journal and outcome topics (which drop samples when its reader falls behind on a loaded host)."""

from __future__ import annotations

from pathlib import Path

from fleet_core.model import Command, CommandResult, Outcome, Priority
from fleet_core.shard_journal import ShardJournal
from fleet_sim.summary import JournalRecord, judge_history, merge_journals, read_shard_journals, tally_outcomes


def command(cid: str, agent: str = 'r001', kind: str = 'goto') -> Command:
    return Command(cid, 't', 'site', 'zone', agent, 1, 100, Priority.NORMAL, 1.0, 1e12, kind)


def result(c: Command, outcome: Outcome) -> CommandResult:
    return CommandResult(c.command_id, c.trace_id, c.agent_id, c.shard_id, c.seq, outcome, 2, 1, 5.0, '', 10.0)


def test_the_shard_journals_are_read_per_replica(tmp_path: Path) -> None:
    a = ShardJournal(tmp_path / 'a' / 'journal.db', background_checkpoints=False)
    b = ShardJournal(tmp_path / 'b' / 'journal.db', background_checkpoints=False)
    done, running = command('done'), command('running', 'r002')
    a.accept([done, running], now=1.0)
    a.record(results=[result(done, Outcome.SUCCEEDED)])
    b.record(results=[result(done, Outcome.SUCCEEDED)])  # b saw only the outcome
    a.close()
    b.close()
    found = read_shard_journals([tmp_path / 'a' / 'journal.db', tmp_path / 'b' / 'journal.db'])
    assert found['running'] == [JournalRecord('r002', 'goto', None, 0, 0.0)]
    assert [(r.kind, r.outcome) for r in found['done']] == [('goto', int(Outcome.SUCCEEDED)), ('', 0)]


def test_what_the_observer_missed_is_taken_from_the_journals_and_disagreements_stay_visible() -> None:
    journal = {'seen': ('r001', 'goto')}
    outcomes = {'seen': [(int(Outcome.SUCCEEDED), 1, 3.0)]}
    recorded = {
        'seen': [JournalRecord('r001', 'goto', int(Outcome.SUCCEEDED), 1, 3.0)],
        'missed': [JournalRecord('', '', int(Outcome.FAILED), 1, 4.0), JournalRecord('r002', 'dock', None, 0, 0)],
        'undecided': [JournalRecord('r003', 'goto', None, 0, 0.0)],
        'outcome-only': [JournalRecord('r004', '', int(Outcome.SUCCEEDED), 1, 1.0)],
        'disputed': [JournalRecord('r005', 'goto', int(Outcome.FAILED), 1, 1.0)],
    }
    journal['disputed'] = ('r005', 'goto')
    outcomes['disputed'] = [(int(Outcome.SUCCEEDED), 1, 1.0)]
    merge_journals(journal, outcomes, recorded)
    assert journal['missed'] == ('r002', 'dock') and 'outcome-only' not in journal
    assert outcomes['seen'] == [(int(Outcome.SUCCEEDED), 1, 3.0)]  # not repeated
    assert outcomes['missed'] == [(int(Outcome.FAILED), 1, 4.0)]
    assert 'undecided' not in outcomes
    tally = tally_outcomes(journal, outcomes)
    assert tally.missing == ('undecided',)
    assert tally.conflicting == ('disputed',)
    verdict = judge_history(
        journal=journal, outcomes={c: [o[0] for o in v] for c, v in outcomes.items()}, executions=[], tolerance_sec=0
    )
    assert {(v.kind.value, v.command_id) for v in verdict.violations} >= {
        ('missing_outcome', 'undecided'),
        ('conflicting_outcomes', 'disputed'),
    }

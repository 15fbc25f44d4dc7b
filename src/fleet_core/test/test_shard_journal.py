"""ShardJournal: what a replica recovers after a crash (unfinished commands, seqs, epochs, requests, outcomes)."""

from __future__ import annotations

import sqlite3

import pytest

from fleet_core.model import Command, CommandResult, Outcome, Priority
from fleet_core.shard_journal import (
    CommandState,
    GateVerdict,
    JournalGate,
    JournalUnavailable,
    ShardJournal,
    SubmissionRecord,
)
from harness.wait import wait_for


def command(
    cid: str, agent: str = 'r001', *, seq: int = 0, epoch: int = 1, issued: float = 100.0, args: str = '{}'
) -> Command:
    return Command(
        cid, 'trace', 'site', 'zone', agent, seq, epoch, Priority.NORMAL, issued, issued + 30.0, 'noop', args
    )


def result(c: Command, outcome: Outcome = Outcome.SUCCEEDED, stamp: float = 110.0) -> CommandResult:
    return CommandResult(c.command_id, c.trace_id, c.agent_id, c.shard_id, c.seq, outcome, 2, 1, 5.0, 'ok', stamp)


@pytest.fixture
def path(tmp_path):
    return tmp_path / 'shard' / 'journal.db'


def test_unfinished_commands_survive_a_reopen_with_their_latest_delivery(path):
    journal = ShardJournal(path)
    a, b, c = command('a', issued=1.0), command('b', 'r002', issued=2.0), command('c', issued=3.0)
    journal.accept([a, b, c], now=10.0)
    journal.record(sends=[a.with_delivery(seq=7, epoch=1, attempt=2), b.with_delivery(seq=3, epoch=1, attempt=1)])
    journal.record(results=[result(b.with_delivery(seq=3, epoch=1, attempt=1))])
    journal.close()

    reopened = ShardJournal(path)
    unfinished = reopened.unfinished()
    assert [(x.command_id, x.seq, x.attempt) for x in unfinished] == [('a', 7, 2), ('c', 0, 1)]
    assert unfinished[0] == a.with_delivery(seq=7, epoch=1, attempt=2)
    assert reopened.max_seqs() == {'r001': 7, 'r002': 3}


def test_seq_high_water_never_goes_down(path):
    journal = ShardJournal(path)
    a = command('a')
    journal.accept([a], now=1.0)
    journal.record(sends=[a.with_delivery(seq=1005, epoch=2, attempt=1)])
    journal.record(sends=[a.with_delivery(seq=4, epoch=2, attempt=2)])
    assert journal.max_seqs() == {'r001': 1005}


def test_an_outcome_is_final_and_queryable(path):
    journal = ShardJournal(path)
    a, b = command('a'), command('b')
    journal.accept([a, b], now=1.0)
    journal.record(results=[result(a, Outcome.FAILED)])
    journal.record(results=[result(a, Outcome.SUCCEEDED)])  # a second decision never overwrites the first
    fates = journal.fates(['a', 'b', 'ghost'])
    assert [f.state for f in fates] == [CommandState.FINISHED, CommandState.PENDING, CommandState.UNKNOWN]
    assert fates[0].result is not None and fates[0].result.outcome is Outcome.FAILED
    assert fates[0].result.detail == 'ok' and fates[1].agent_id == 'r001'
    assert journal.finished_ids(['a', 'b']) == {'a'}


def test_an_outcome_of_a_command_never_followed_is_kept_as_finished(path):
    """A standby that started late hears outcomes of commands it never saw accepted: never adopt them later."""
    journal = ShardJournal(path)
    late = command('late')
    journal.record(results=[result(late)])
    journal.accept([late], now=2.0)  # its journal entry arrives afterwards
    assert journal.unfinished() == []
    assert journal.fates(['late'])[0].state is CommandState.FINISHED


def test_re_accepting_keeps_the_row_and_raises_the_epoch(path):
    journal = ShardJournal(path)
    a = command('a', epoch=101)
    journal.accept([a], now=1.0)
    journal.accept([a.with_delivery(seq=0, epoch=202, attempt=0)], now=2.0)  # adopted by the next leader
    journal.accept([a.with_delivery(seq=0, epoch=101, attempt=0)], now=3.0)  # a late copy of the first entry
    assert [c.epoch for c in journal.unfinished()] == [202]
    assert journal.max_epoch() == 202


def test_requests_are_answered_with_the_first_commands_after_a_reopen(path):
    journal = ShardJournal(path)
    a, b = command('a'), command('b', 'r002')
    first = SubmissionRecord('req-1', 'trace', ('a', 'b'), ('r001', 'r002'), 101, 5.0)
    journal.accept([a, b], now=5.0, request=first)
    second = SubmissionRecord('req-1', 'trace2', ('x',), ('r001',), 101, 6.0)
    journal.accept([], now=6.0, request=second)  # ignored: the first answer stands
    journal.close()
    assert ShardJournal(path).request('req-1') == first
    assert ShardJournal(path).request('req-2') is None
    journal = ShardJournal(path)
    for index in range(3):
        journal.accept([], now=10.0 + index, request=SubmissionRecord(f'r{index}', 't', (), (), 1, 10.0 + index))
    assert [r.request_id for r in journal.recent_requests(limit=2)] == ['r1', 'r2']


def test_recent_results_are_those_just_before_the_newest_outcome(path):
    journal = ShardJournal(path)
    commands = [command(f'c{i}') for i in range(4)]
    journal.accept(commands, now=1.0)
    journal.record(
        results=[result(c, stamp=stamp) for c, stamp in zip(commands, (10.0, 95.0, 99.0, 100.0), strict=True)]
    )
    assert [r.command_id for r in journal.recent_results(10.0)] == ['c3', 'c2', 'c1']
    assert [r.command_id for r in journal.recent_results(10.0, limit=1)] == ['c3']


def test_epochs_noted_survive(path):
    journal = ShardJournal(path)
    journal.note_epoch(305)
    journal.note_epoch(201)
    journal.close()
    assert ShardJournal(path).max_epoch() == 305


def test_prune_forgets_old_outcomes_and_requests_but_never_unfinished_work(path):
    journal = ShardJournal(path)
    old, new, open_ = command('old'), command('new'), command('open')
    journal.accept([old, new, open_], now=1.0, request=SubmissionRecord('r', 't', ('old',), ('r001',), 1, 1.0))
    journal.record(results=[result(old, stamp=10.0), result(new, stamp=50.0)])
    assert journal.prune(before=20.0) == 1
    assert [f.state for f in journal.fates(['old', 'new', 'open'])] == [
        CommandState.UNKNOWN,
        CommandState.FINISHED,
        CommandState.PENDING,
    ]
    assert journal.request('r') is None


def test_durability_is_checked_and_full_commits_accepts(path):
    with pytest.raises(ValueError, match='durability'):
        ShardJournal(path, durability='sometimes')
    journal = ShardJournal(path, durability='full')
    journal.accept([command('a')], now=1.0)
    # After a FULL commit the connection is back to NORMAL for the frequent delivery/outcome writes.
    assert journal._conn().execute('PRAGMA synchronous').fetchone()[0] == 1


def test_an_unusable_file_or_failed_write_is_a_typed_error(path, tmp_path):
    path.parent.mkdir(parents=True)
    path.write_bytes(b'this is not a database' * 100)
    with pytest.raises(JournalUnavailable, match=r'journal\.db'):
        ShardJournal(path)
    other = ShardJournal(tmp_path / 'ok.db')
    other._conn().execute('DROP TABLE commands')
    with pytest.raises(JournalUnavailable, match='write failed'):
        other.accept([command('a')], now=1.0)
    other.close()
    with pytest.raises(JournalUnavailable, match='closed'):
        other.unfinished()


def test_wal_mode(path):
    ShardJournal(path).close()
    assert sqlite3.connect(path).execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def test_the_gate_admits_only_the_lease_holders_epoch():
    gate: JournalGate[str] = JournalGate(hold_limit=2)
    assert gate.offer(0, 'no lease yet') is GateVerdict.REJECTED
    assert gate.on_lease(101) == []
    assert gate.offer(101, 'a') is GateVerdict.ACCEPTED
    # Entries of the next leader may arrive before its lease: held until it does.
    assert gate.offer(202, 'b') is GateVerdict.HELD
    assert gate.offer(303, 'c') is GateVerdict.HELD
    assert gate.offer(404, 'd') is GateVerdict.REJECTED  # over the hold limit
    assert gate.on_lease(303) == ['c']  # 202 never held the lease: its entry is rejected
    assert gate.offer(202, 'late b') is GateVerdict.REJECTED
    assert gate.offer(101, 'fenced') is GateVerdict.REJECTED
    assert gate.on_lease(202) == []  # an older lease changes nothing
    assert gate.offer(303, 'e') is GateVerdict.ACCEPTED
    assert (gate.rejected, gate.held) == (5, 0)


def test_checkpoints_run_beside_the_writer_and_stop_with_it(path, tmp_path, monkeypatch):
    monkeypatch.setattr('fleet_core.shard_journal.CHECKPOINT_EVERY_SEC', 0.01)
    rows = [command(f'c{i}', args='x' * 200) for i in range(300)]
    quiet = ShardJournal(tmp_path / 'quiet.db', background_checkpoints=False)
    assert quiet._conn().execute('PRAGMA wal_autocheckpoint').fetchone()[0] == 0  # never inside a commit
    size = (tmp_path / 'quiet.db').stat().st_size
    quiet.accept(rows, now=1.0)
    assert (tmp_path / 'quiet.db').stat().st_size == size  # everything still in the WAL
    quiet.close()

    journal = ShardJournal(path)
    size = path.stat().st_size
    journal.accept(rows, now=1.0)
    checkpointer = journal._checkpointer
    assert checkpointer is not None and checkpointer.is_alive()
    # The background thread copies the WAL into the database file.
    wait_for(lambda: path.stat().st_size > size, 5, what='a background checkpoint')
    journal.close()
    assert not checkpointer.is_alive()

"""DurableShard without ROS: what a replica admits from the replicated streams, what a new leader recovers, and which
handed-over work it trusts."""

from __future__ import annotations

from fleet_core.model import Command, CommandResult, Outcome, Priority
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import GateVerdict, ShardJournal, SubmissionRecord
from fleet_orchestrator.durable import DurableShard, default_state_dir


def command(cid: str, *, epoch: int = 100, seq: int = 0, issued: float = 1.0) -> Command:
    return Command(cid, 't', 'site', 'zone', 'r001', seq, epoch, Priority.NORMAL, issued, issued + 60.0, 'noop')


def shard(tmp_path, name: str = 'b') -> DurableShard:
    journal = ShardJournal(tmp_path / name / 'journal.db', background_checkpoints=False)
    return DurableShard(journal, ShardReplica(['r001', 'r002']), own_id=name)


def test_followed_entries_are_journaled_only_from_the_lease_holders_epoch(tmp_path):
    durable = shard(tmp_path)
    assert durable.on_entry(command('early', epoch=100)) is GateVerdict.HELD  # its lease has not arrived yet
    durable.on_lease(100, 'a')
    assert durable.handoff_due  # a new leader: hand it what this journal holds
    assert durable.on_entry(command('ok', epoch=100)) is GateVerdict.ACCEPTED
    assert durable.on_entry(command('fenced', epoch=99)) is GateVerdict.REJECTED
    durable.on_entry(SubmissionRecord('req', 't', ('ok',), ('r001',), 100, 2.0))
    durable.on_outcomes([CommandResult('early', 't', 'r001', 'zone', 1, Outcome.SUCCEEDED, stamp=3.0)])
    durable.persist(5.0)
    assert [c.command_id for c in durable.journal.unfinished()] == ['ok']
    assert [c.command_id for c in durable.replica.pending] == ['ok']
    assert durable.journal.request('req') is not None
    assert durable.gate.rejected == 1


def test_recovery_merges_journal_and_hot_copy_minus_decided_commands(tmp_path):
    durable = shard(tmp_path)
    durable.journal.accept([command('journaled', issued=1.0), command('decided', issued=2.0)], now=1.0)
    durable.journal.record(results=[CommandResult('decided', 't', 'r001', 'zone', 1, Outcome.FAILED, stamp=4.0)])
    hot = [command('hot', issued=3.0), command('decided', issued=2.0)]
    assert [c.command_id for c in durable.recover(hot)] == ['journaled', 'hot']


def test_seqs_and_epochs_of_the_journal_seed_the_hot_copy(tmp_path):
    first = shard(tmp_path)
    first.journal.accept([command('x')], now=1.0)
    first.journal.record(sends=[command('x').with_delivery(seq=42, epoch=300, attempt=1)])
    first.journal.note_epoch(300)
    first.journal.close()
    again = shard(tmp_path)
    plan = again.replica.takeover()
    assert plan.seq_base['r001'] >= 42 and plan.epoch > 300


def test_handed_over_work_is_taken_only_from_older_epochs(tmp_path):
    durable = shard(tmp_path)
    durable.on_lease(200, 'a')
    assert durable.on_handoff(100, leading_epoch=0)  # accepted by a fenced leader, handed on
    assert not durable.on_handoff(200, leading_epoch=0)  # the current leader's: not a hand-over
    assert not durable.on_handoff(900, leading_epoch=0)  # from the future: forged or misconfigured
    assert not durable.on_handoff(0, leading_epoch=0)
    assert durable.on_handoff(250, leading_epoch=301)  # leading: anything below our epoch
    assert durable.handoffs_rejected == 3


def test_default_state_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('FLEETLANES_STATE_DIR', str(tmp_path))
    assert default_state_dir('s', 'z', 'a') == tmp_path / 'shards' / 's' / 'z' / 'a'

"""DurableShard without ROS: what a replica admits from the replicated streams, what a new leader recovers, and which
handed-over work it trusts."""

from __future__ import annotations

from fleet_core.model import Command, CommandResult, Outcome, Priority
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import GateVerdict, ShardJournal, SubmissionRecord
from fleet_orchestrator.catch_up import CATCH_UP_MAX_SEC, HANDOFF_AUDIT_SEC, CatchUp, HandoffAudit
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


def test_a_new_leader_waits_for_the_previous_epochs_journal_before_taking_unknown_request_ids(tmp_path):
    # Chaos seed 15: a (epoch 100) accepted request R; b, a late standby, never copied it and led epoch 101. A re-sent
    # R must not be taken as new (the robot would run it twice) until a's journal is handed over; a long bound only.
    wait = CatchUp.start(previous_epoch=100, led_epoch=0, followed=False, now=0.0)
    assert not wait.done(2 * 2.0)  # the old fixed window (2 lease periods) ended here
    assert not wait.done(CATCH_UP_MAX_SEC - 0.1)
    assert not wait.on_handoff_end(0)  # a replica that never led: its hand-over proves nothing about epoch 100
    assert not wait.done(10.0)
    assert wait.on_handoff_end(100)  # a, back as a standby, handed over its journal (R's record came before)
    assert wait.done(10.0)
    assert not wait.on_handoff_end(100)  # counted once
    assert CatchUp.start(previous_epoch=100, led_epoch=0, followed=False, now=0.0).done(CATCH_UP_MAX_SEC)  # bounded


def test_a_leader_that_led_or_followed_the_previous_epoch_is_caught_up_at_once(tmp_path):
    assert CatchUp.start(previous_epoch=0, led_epoch=0, followed=False, now=0.0).done(0.0)  # first start of a shard
    assert CatchUp.start(previous_epoch=100, led_epoch=100, followed=False, now=0.0).done(0.0)  # its own journal
    assert CatchUp.start(previous_epoch=101, led_epoch=0, followed=True, now=0.0).done(0.0)  # took its snapshot
    assert not CatchUp.start(previous_epoch=101, led_epoch=100, followed=False, now=0.0).done(0.0)
    journal = ShardJournal(tmp_path / 'a' / 'journal.db', background_checkpoints=False)
    assert journal.led_epoch() == 0
    journal.note_led(100)
    journal.note_led(7)  # never goes down
    journal.close()
    reopened = ShardJournal(tmp_path / 'a' / 'journal.db', background_checkpoints=False)
    assert reopened.led_epoch() == 100  # what a restarted replica's hand-over vouches for
    reopened.close()


def test_a_hand_over_is_asked_for_again_until_every_command_it_listed_arrived_or_is_held():
    audit = HandoffAudit.start()
    audit.on_end('a', ['x', 'y', 'z'], now=10.0)
    held: set[str] = set()

    def holds(ids: frozenset[str]) -> set[str]:
        return held & ids

    assert audit.due(10.0 + HANDOFF_AUDIT_SEC / 2, holds) == []  # the commands may still be on their way
    audit.on_handed('x')
    held.add('y')  # e.g. this leader adopted it from its own journal
    at = 10.0 + HANDOFF_AUDIT_SEC
    assert audit.due(at, holds) == [('a', 1, 1)]  # z is missing: asked once
    assert audit.due(at + HANDOFF_AUDIT_SEC / 2, holds) == []  # asked at most every HANDOFF_AUDIT_SEC
    assert audit.due(at + HANDOFF_AUDIT_SEC, holds) == [('a', 1, 2)]
    audit.on_handed('z')
    assert audit.due(at + 2 * HANDOFF_AUDIT_SEC, holds) == []
    assert audit.expected == {}  # done with a


def test_a_replicas_newest_hand_over_replaces_what_it_listed_before():
    audit = HandoffAudit.start()
    audit.on_end('a', ['x'], now=0.0)
    audit.on_end('b', ['y'], now=0.0)
    audit.on_end('a', [], now=1.0)  # a handed nothing the second time: nothing owed by a
    assert audit.due(HANDOFF_AUDIT_SEC, lambda ids: set()) == [('b', 1, 1)]

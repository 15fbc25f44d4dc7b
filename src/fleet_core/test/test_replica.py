from fleet_core.model import Command, Priority
from fleet_core.replica import SEQ_GAP, ShardReplica


def cmd(command_id, agent='a1', seq=0, epoch=1, issued=0.0):
    return Command(command_id, 't', 's', 'z', agent, seq, epoch, Priority.NORMAL, issued, issued + 10, 'noop')


def test_takeover_plan_has_unfinished_commands_higher_epoch_and_seq_gap():
    replica = ShardReplica(['a1', 'a2'])
    replica.on_lease(3)
    replica.on_journal(cmd('c2', issued=2.0))
    replica.on_journal(cmd('c1', seq=7, issued=1.0))
    replica.on_journal(cmd('c3', agent='a2'))
    replica.on_outcome('c3')
    assert replica.on_ack('a1', 'c1', seq=7)
    replica.on_heartbeat('a2', last_applied_seq=9, highest_epoch_seen=4)
    plan = replica.takeover()
    assert plan.epoch == 5
    assert [c.command_id for c in plan.pending] == ['c1', 'c2']
    assert plan.seq_base == {'a1': 7 + SEQ_GAP, 'a2': 9 + SEQ_GAP}


def test_outcome_before_journal_is_not_resurrected():
    replica = ShardReplica(['a1'])
    replica.on_outcome('c1')
    replica.on_journal(cmd('c1'))
    assert replica.pending == ()


def test_unknown_agents_do_not_enter_the_seq_table():
    replica = ShardReplica(['a1'])
    replica.seed_seq('ghost', 100)
    assert replica.takeover().seq_base == {'a1': SEQ_GAP}


def test_an_ack_raises_the_seq_base_only_for_the_followed_delivery_it_names():
    replica = ShardReplica(['a1', 'a2'])
    replica.on_journal(cmd('c1', seq=3))
    huge = 2**64 - 10
    assert not replica.on_ack('a1', 'c1', seq=huge)  # a followed command, another seq: forged or stale
    assert not replica.on_ack('a1', 'nope', seq=huge)  # a command nobody follows
    assert not replica.on_ack('a2', 'c1', seq=3)  # the right delivery, claimed by another agent
    replica.on_outcome('c1')
    assert not replica.on_ack('a1', 'c1', seq=3)  # finished: nothing to follow
    assert replica.takeover().seq_base == {'a1': 3 + SEQ_GAP, 'a2': SEQ_GAP}


def test_seeded_seqs_from_the_own_journal_are_taken():
    replica = ShardReplica(['a1'])
    replica.seed_seq('a1', 42)
    assert replica.takeover().seq_base == {'a1': 42 + SEQ_GAP}


def test_leading_then_stepping_down_keeps_what_was_owed():
    replica = ShardReplica(['a1'])
    replica.on_journal(cmd('c1'))
    replica.handed_over()
    assert replica.pending == ()
    replica.restore([cmd('c2', seq=4, epoch=2)])
    assert [c.command_id for c in replica.pending] == ['c2']
    assert replica.takeover().epoch == 3

"""Gap detection mid-run: a standby that loses journal entries while it follows notices it from the leader's lease
(which counts the entries journaled in its epoch), is not caught up (not eligible to lead at once, not counted in
ShardStatus standbys_caught_up), asks the leader for a snapshot and is caught up again once it has taken it."""

from __future__ import annotations

import time

from fleet_core.model import Command, Priority
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import GAP_GRACE_SEC, ShardJournal
from fleet_orchestrator.durable import SNAPSHOT_REQUEST_EVERY_SEC, DurableShard


def durable_shard(tmp_path, name: str = 'b') -> DurableShard:
    journal = ShardJournal(tmp_path / name / 'journal.db', background_checkpoints=False)
    return DurableShard(journal, ShardReplica(['r001']), own_id=name)


def entry(cid: str, epoch: int = 100) -> Command:
    return Command(cid, 't', 'site', 'zone', 'r001', 1, epoch, Priority.NORMAL, 1.0, 1e12, 'noop')


def test_a_gap_makes_the_standby_not_caught_up_until_the_snapshot_it_asks_for(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a', written=0, now=0.0)
    assert durable.on_snapshot_end(100, leader_id='a', current_leader='a', covered=0)
    assert durable.caught_up and durable.gap.synced
    durable.on_journal_entry(entry('c1'))
    durable.on_lease(100, 'a', written=2, now=1.0)  # c2 never arrives
    assert durable.check_gap(1.0 + GAP_GRACE_SEC - 0.1) == ''
    assert durable.caught_up and not durable.snapshot_request_due(1.0)
    reason = durable.check_gap(1.0 + GAP_GRACE_SEC)
    assert 'journal gap in epoch 100' in reason
    assert not durable.caught_up and durable.gap_open == reason
    now = 1.0 + GAP_GRACE_SEC
    assert durable.snapshot_request_due(now)
    assert not durable.snapshot_request_due(now + SNAPSHOT_REQUEST_EVERY_SEC / 2)
    assert durable.snapshot_request_due(now + SNAPSHOT_REQUEST_EVERY_SEC)  # asked again until answered
    # Another replica's marker, or one of an old epoch, does not answer it.
    assert not durable.on_snapshot_end(100, leader_id='x', current_leader='a', covered=2)
    assert not durable.caught_up
    assert durable.on_snapshot_end(100, leader_id='a', current_leader='a', covered=2)
    assert durable.caught_up and not durable.gap_open
    assert not durable.snapshot_request_due(now + 10 * SNAPSHOT_REQUEST_EVERY_SEC)
    assert durable.check_gap(now + 100.0) == ''


def test_a_standby_that_follows_every_entry_never_asks(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a', written=0, now=0.0)
    durable.on_snapshot_end(100, leader_id='a', current_leader='a', covered=0)
    for n in range(1, 30):
        durable.on_lease(100, 'a', written=n, now=n * 0.25)  # each lease overtakes its entry
        durable.on_journal_entry(entry(f'c{n}'))
        assert durable.check_gap(n * 0.25 + GAP_GRACE_SEC) == ''
    assert durable.caught_up and durable.gap.gaps == 0
    assert not durable.snapshot_request_due(time.time())


def test_a_held_marker_keeps_the_count_it_covers(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a', written=0, now=0.0)
    assert not durable.on_snapshot_end(101, leader_id='c', current_leader='a', covered=5)  # overtook its lease
    durable.on_lease(101, 'c', written=5, now=1.0)
    assert durable.caught_up and durable.gap.received() == 5
    assert durable.check_gap(1.0 + GAP_GRACE_SEC) == ''

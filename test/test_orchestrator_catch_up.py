"""Catch-up: a standby that follows a leader is eligible to lead only once it holds the leader's unfinished work (it
followed the takeover, or got the snapshot a leader sends to a follower that joins late); the leader's ShardStatus
counts the standbys that confirmed it. One not caught up still leads after a long lapse, never leaving the shard
leaderless."""

from __future__ import annotations

import pytest
from test_orchestrator_handover import SHARD, SITE, leader_and_caught_up_standby, replica

from fleet_cli.verbs.status import StatusBoard
from fleet_core import topics
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import ShardJournal
from fleet_interfaces.msg import ShardStatus
from fleet_orchestrator.durable import (
    MARKER_WAIT_SEC,
    SNAPSHOT_REQUEST_EVERY_SEC,
    UNCAUGHT_TAKEOVER_LEASES,
    DurableShard,
    may_take_over,
)
from fleet_ros import qos

LEASE_SEC = 0.6  # test_orchestrator_handover's fleet.yaml


def durable_shard(tmp_path, name: str = 'b') -> DurableShard:
    journal = ShardJournal(tmp_path / name / 'journal.db', background_checkpoints=False)
    return DurableShard(journal, ShardReplica(['r001']), own_id=name)


def test_only_the_lease_holders_marker_in_its_epoch_catches_a_replica_up(tmp_path):
    durable = durable_shard(tmp_path)
    assert not durable.caught_up  # started: it may have missed work the leader accepted
    durable.on_lease(100, 'a')
    assert not durable.on_snapshot_end(100, leader_id='x', current_leader='a')  # not the lease holder
    assert not durable.on_snapshot_end(99, leader_id='a', current_leader='a')  # an older epoch
    assert not durable.on_snapshot_end(100, leader_id='b', current_leader='b')  # its own, echoed
    assert not durable.caught_up and durable.answer_due == 0
    assert durable.on_snapshot_end(100, leader_id='a', current_leader='a')
    assert durable.caught_up and durable.answer_due == 100


def test_a_takeover_marker_that_overtakes_its_lease_is_held_until_the_lease(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a')
    assert not durable.on_snapshot_end(101, leader_id='c', current_leader='a')
    assert not durable.caught_up
    durable.on_lease(101, 'c')
    assert durable.caught_up and durable.answer_due == 101


def test_a_replica_that_led_is_caught_up(tmp_path):
    durable = durable_shard(tmp_path)
    durable.led()
    assert durable.caught_up


def test_not_caught_up_waits_for_a_long_lapse_but_never_forever():
    lease = 1.0
    assert may_take_over(caught_up=True, lease_seen=True, lapse_sec=1.1, lease_sec=lease)
    assert not may_take_over(caught_up=False, lease_seen=True, lapse_sec=1.1, lease_sec=lease)
    assert may_take_over(caught_up=False, lease_seen=True, lapse_sec=UNCAUGHT_TAKEOVER_LEASES * lease, lease_sec=lease)
    # A cold start (no lease ever seen): there was no leader to catch up with; the first-lease wait decides.
    assert may_take_over(caught_up=False, lease_seen=False, lapse_sec=0.0, lease_sec=lease)


@pytest.mark.system
def test_a_late_standby_is_caught_up_by_the_snapshot_and_counted_in_the_status(ros, tmp_path):
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    statuses: list[ShardStatus] = []
    ros.node('status').create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    ros.spin_until(lambda: statuses, 10, 'a status')
    assert (statuses[-1].standbys_following, statuses[-1].standbys_caught_up) == (0, 0)

    b = replica(ros, tmp_path, 'b', 1)  # started late: a has led for a while
    assert not b.durable.caught_up
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.caught_up, 10, "b to be caught up by a's snapshot")
    ros.spin_until(
        lambda: statuses and (statuses[-1].standbys_following, statuses[-1].standbys_caught_up) == (1, 1),
        10,
        'the status to count b as a caught-up standby',
    )

    # Were b not caught up, it would let the lease lapse for UNCAUGHT_TAKEOVER_LEASES lease periods before leading.
    b.durable.caught_up = False
    a.trigger_deactivate()
    ros.spin_until(lambda: b.leading, 15, 'b to take over all the same')
    assert b.takeover_seconds >= UNCAUGHT_TAKEOVER_LEASES * LEASE_SEC
    assert b.durable.caught_up  # leading: it holds what it leads with


@pytest.mark.system
def test_a_caught_up_standby_takes_over_without_the_long_wait(ros, tmp_path):
    a, b = leader_and_caught_up_standby(ros, tmp_path)
    a.trigger_deactivate()
    ros.spin_until(lambda: b.leading, 15, 'b to take over')
    assert b.takeover_seconds < UNCAUGHT_TAKEOVER_LEASES * LEASE_SEC


def test_fleetctl_status_shows_the_caught_up_standbys():
    key = (SITE, SHARD)
    status = ShardStatus(site_id=SITE, shard_id=SHARD, leader_id='a', standbys_following=2, standbys_caught_up=1)
    board = StatusBoard([key], {key: status})
    row = board.row(key, now=0.0)
    assert (row['standbys_caught_up'], row['standbys_following']) == (1, 2)
    header, line = board.table(now=0.0)
    column = header.index('STANDBY')
    assert line[column:].split()[0] == '1/2'


def test_a_follower_of_a_new_leader_is_caught_up_only_by_its_marker_and_asks_when_it_is_late(tmp_path):
    # Seen in the five-runs loop: b led epoch 1 for a moment, was fenced, and followed a (epoch 100), whose takeover
    # marker b had missed. b kept counting itself caught up from its own leadership and never asked for a snapshot.
    durable = durable_shard(tmp_path)
    durable.led()
    assert durable.caught_up
    durable.on_lease(100, 'a', now=10.0)
    assert not durable.caught_up  # what it led is not the new leader's work
    assert not durable.snapshot_request_due(10.0 + MARKER_WAIT_SEC / 2)  # the marker may still come
    assert durable.snapshot_request_due(10.0 + MARKER_WAIT_SEC)
    assert not durable.snapshot_request_due(10.0 + MARKER_WAIT_SEC + SNAPSHOT_REQUEST_EVERY_SEC / 2)
    assert durable.snapshot_request_due(10.0 + MARKER_WAIT_SEC + SNAPSHOT_REQUEST_EVERY_SEC)
    assert durable.on_snapshot_end(100, leader_id='a', current_leader='a')
    assert durable.caught_up and not durable.snapshot_request_due(60.0)

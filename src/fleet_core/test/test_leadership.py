"""Tests for fleet_core.leadership: lapse detection, epoch + 1 takeover, fencing, wrong-shard refusal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.leadership import (
    LEADER_LEASE_MAX_WAIT_SEC,
    Candidacy,
    FirstLeaseEvidence,
    Lease,
    LeaseConfig,
    LeaseConfigError,
    LeaseState,
    NotLeader,
    WrongShardLease,
    first_lease_wait,
    next_epoch,
)

CONFIG = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, takeover_grace_sec=0.2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def node(name: str, clock: Clock, shard: str = 'zone_1') -> LeaseState:
    return LeaseState(site_id='site_a', shard_id=shard, node_id=name, config=CONFIG, clock=clock)


def test_config_is_validated() -> None:
    with pytest.raises(LeaseConfigError, match='renew_period_sec must be shorter'):
        LeaseConfig(lease_sec=1.0, renew_period_sec=1.0)
    with pytest.raises(LeaseConfigError, match='lease_sec'):
        LeaseConfig(lease_sec=0)
    with pytest.raises(LeaseConfigError, match='takeover_grace_sec'):
        LeaseConfig(takeover_grace_sec=-1)


def test_standby_takes_over_with_next_epoch_after_lapse_and_grace() -> None:
    clock = Clock()
    leader, standby = node('a', clock), node('b', clock)
    lease = leader.take_over(last_seq_hint=7)
    assert (lease.epoch, lease.leader_id, lease.last_seq_hint) == (1, 'a', 7)
    assert standby.observe(lease)
    clock.now += 0.5
    assert standby.observe(leader.renew())
    clock.now += 1.19
    assert not standby.should_take_over()
    clock.now += 0.01
    assert standby.should_take_over()
    new = standby.take_over()
    assert new.epoch == 2 and standby.is_leader()
    # The old leader, resumed after a pause, is fenced: its lease lapsed and it sees the new epoch.
    assert not leader.is_leader()
    with pytest.raises(NotLeader, match='lapsed'):
        leader.renew()
    assert leader.observe(new)
    assert not leader.should_take_over()


def test_higher_epoch_seen_from_agents_steps_the_leader_down() -> None:
    clock = Clock()
    leader = node('a', clock)
    leader.take_over()
    leader.note_epoch(5)
    assert not leader.is_leader()
    with pytest.raises(NotLeader):
        leader.renew()
    clock.now += 2.0
    assert leader.take_over().epoch == 6


def test_orchestrator_without_any_lease_waits_first_lease_wait_before_leading() -> None:
    clock = Clock()
    standby = node('b', clock)  # first_lease_wait_sec defaults to 2.0: discovery of a live leader's lease
    clock.now += 1.99
    assert not standby.should_take_over()
    clock.now += 0.02
    assert standby.should_take_over()
    # A lease that arrives in time keeps it a standby; the lapse is then judged from that lease.
    late = node('c', clock)
    clock.now += 1.5
    late.observe(node('a', clock).take_over())
    clock.now += 1.0
    assert not late.should_take_over()
    clock.now += 0.21
    assert late.should_take_over()
    with pytest.raises(LeaseConfigError, match='first_lease_wait_sec'):
        LeaseConfig(first_lease_wait_sec=-1.0)


def test_first_wait_restarts_when_the_node_becomes_eligible() -> None:
    clock = Clock()
    standby = node('b', clock)
    clock.now += 5.0  # a slow configure
    standby.restart_first_wait()
    clock.now += 1.9
    assert not standby.should_take_over()
    clock.now += 0.2
    assert standby.should_take_over()


def test_wrong_shard_lease_is_refused() -> None:
    clock = Clock()
    other = node('x', clock, shard='zone_2').take_over()
    standby = node('b', clock)
    with pytest.raises(WrongShardLease, match=r'configured for site_a/zone_1 .* site_a/zone_2'):
        standby.observe(other)


def test_older_epoch_is_ignored() -> None:
    clock = Clock()
    standby = node('b', clock)
    newer = Lease('site_a', 'zone_1', 'n', 4, 0, clock.now, 1.0)
    older = Lease('site_a', 'zone_1', 'o', 3, 0, clock.now, 1.0)
    assert standby.observe(newer)
    assert not standby.observe(older)
    assert standby.current == newer and standby.max_epoch_seen == 4


def test_a_lease_below_an_epoch_known_from_elsewhere_is_not_followed() -> None:
    # A replica restarted with its journal's highest epoch (100) sees the lease of a replica that lost its journal
    # and led with epoch 1: that leader is fenced at the agents, so it is not followed (nor handed work).
    clock = Clock()
    standby = node('a', clock)
    standby.note_epoch(100)
    assert not standby.observe(Lease('site_a', 'zone_1', 'b', 1, 0, clock.now, 1.0))
    assert standby.current is None and standby.max_epoch_seen == 100
    # Once it leads above that epoch, it is followed.
    above = Lease('site_a', 'zone_1', 'b', 101, 0, clock.now, 1.0)
    assert standby.observe(above)
    assert standby.current == above and standby.max_epoch_seen == 101


def test_same_epoch_tie_is_resolved_by_leader_id_and_a_fresh_epoch() -> None:
    clock = Clock()
    low, high = node('a', clock), node('b', clock)
    clock.now += 1.5
    lease_low, lease_high = low.take_over(), high.take_over()
    assert lease_low.epoch == lease_high.epoch == 1
    assert not high.observe(lease_low)
    assert low.observe(lease_high)
    assert high.is_leader() and not low.is_leader()
    clock.now += 0.25
    assert high.should_renew()
    renewed = high.renew()
    assert renewed.epoch == 2
    low.observe(renewed)
    assert low.max_epoch_seen == 2


def test_renew_schedule() -> None:
    clock = Clock()
    leader = node('a', clock)
    assert not leader.should_renew()
    leader.take_over()
    assert not leader.should_renew()
    clock.now += 0.25
    assert leader.should_renew()
    leader.renew()
    assert not leader.should_renew()


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(['a', 'b', 'c']), st.floats(0.0, 0.8)), max_size=60))
def test_epochs_only_grow_and_one_leader_holds_the_top_epoch(steps: list[tuple[str, float]]) -> None:
    """Three orchestrators act in turn on a shared bus: published epochs never go down, and at every moment the
    highest epoch among nodes that believe they lead belongs to exactly one node (agents fence the others)."""
    clock = Clock()
    nodes = {name: node(name, clock) for name in 'abc'}
    published: list[Lease] = []
    for name, dt in steps:
        clock.now += dt
        me = nodes[name]
        for lease in published[-5:]:
            me.observe(lease)
        if me.is_leader():
            if me.should_renew():
                published.append(me.renew())
        elif me.should_take_over():
            published.append(me.take_over())
        leaders = [n for n in nodes.values() if n.is_leader()]
        if leaders:
            top = max(n.epoch for n in leaders)
            assert len([n for n in leaders if n.epoch == top]) == 1
    epochs = [lease.epoch for lease in published]
    assert epochs == sorted(epochs)
    if published:
        assert published[0].epoch == 1


def test_a_leader_whose_lease_lapsed_yields_a_lease_period_to_the_standby() -> None:
    clock = Clock()
    leader, standby = node('a', clock), node('b', clock)
    standby.observe(leader.take_over())
    clock.now += 1.5  # the leader stalled past its lease; the standby noticed
    assert standby.should_take_over()
    with pytest.raises(NotLeader, match='lapsed'):
        leader.renew()
    assert not leader.should_take_over()  # it does not race the standby for the shard
    leader.observe(standby.take_over())
    clock.now += 0.5
    assert not leader.should_take_over() and leader.current is not None and leader.current.leader_id == 'b'
    clock.now += 1.0  # ... and only claims it again if nobody renewed for a whole lease period
    assert leader.should_take_over()


def test_epochs_of_replicas_in_different_slots_never_collide():
    clock = Clock()
    a = LeaseState(site_id='site_a', shard_id='zone_1', node_id='a', config=CONFIG, clock=clock, slot=1, slots=100)
    b = LeaseState(site_id='site_a', shard_id='zone_1', node_id='b', config=CONFIG, clock=clock, slot=2, slots=100)
    # A cold start: both take over at once (neither saw the other); their epochs differ by construction.
    lease_a, lease_b = a.take_over(), b.take_over()
    assert (lease_a.epoch, lease_b.epoch) == (1, 2)
    a.observe(lease_b)  # a sees the higher epoch: it no longer leads
    assert not a.is_leader() and b.is_leader()
    clock.now += CONFIG.lease_sec + CONFIG.takeover_grace_sec + 0.01
    assert a.take_over().epoch == 101  # the next epoch of slot 1 above 2
    b.note_epoch(101)
    assert not b.is_leader()
    assert b.take_over().epoch == 102
    assert [next_epoch(e, 7) for e in (0, 6, 7, 99, 107)] == [7, 7, 107, 107, 207]
    assert next_epoch(5, 0, 1) == 6
    with pytest.raises(ValueError, match='slot'):
        next_epoch(0, 100)


def test_first_lease_wait_is_short_at_a_cold_start_and_patient_beside_a_live_leader():
    config = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, first_lease_wait_sec=2.0)

    def wait(
        slot: int = 0, leader_in_graph: bool = False, others: bool = True, agents_epoch: int = 0, peer: bool = False
    ) -> float:
        return first_lease_wait(
            config,
            slot=slot,
            leader_in_graph=leader_in_graph,
            others_on_lease_topic=others,
            agents_epoch=agents_epoch,
            standby_peer_in_graph=peer,
        )

    assert wait() == 2.0  # peers only: the documented first_lease_wait_sec
    assert wait(slot=9) == 2.25  # one renew period of stagger for slot 9 (9 % 8)
    assert wait(others=False) == 4.0  # discovery has shown nobody yet
    assert wait(agents_epoch=300) == 4.0  # agents follow some leader: two lease periods more
    # A cold restart: the other replica is discovered and does not lead, so the agents' epoch is a dead leader's.
    assert wait(agents_epoch=300, peer=True) == 2.0
    assert wait(agents_epoch=300, peer=True, leader_in_graph=True) == LEADER_LEASE_MAX_WAIT_SEC
    assert wait(leader_in_graph=True) == LEADER_LEASE_MAX_WAIT_SEC  # a live leader's lease is on its way
    assert (
        first_lease_wait(
            LeaseConfig(lease_sec=3.0, renew_period_sec=0.5, first_lease_wait_sec=0.2),
            slot=0,
            leader_in_graph=False,
            others_on_lease_topic=True,
            agents_epoch=0,
        )
        == 3.0
    )  # never shorter than a lease


def test_keep_alive_renews_beside_a_busy_executor_but_not_a_hung_one():
    clock = Clock()
    config = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, stall_limit_sec=3.0)
    a = LeaseState(site_id='site_a', shard_id='zone_1', node_id='a', config=config, clock=clock)
    assert a.keep_alive() is None  # not leading
    a.take_over()
    assert a.keep_alive() is None  # just renewed
    # The executor is held by one long callback: it never polls should_renew, the keeper renews every period.
    for _ in range(11):
        clock.now += 0.25
        kept = a.keep_alive()
        assert kept is not None and kept.epoch == a.epoch and kept.stamp == clock.now
        assert a.is_leader()
    assert a.kept_alive == 10  # the first was within a renew period of the executor's last poll
    # Past stall_limit_sec without a poll the executor counts as hung: the lease is left to lapse.
    clock.now += 0.3
    assert a.executor_stall() > config.stall_limit_sec
    assert a.keep_alive() is None
    clock.now += 1.0
    assert a.keep_alive() is None and not a.is_leader()
    with pytest.raises(NotLeader, match='lapsed'):
        a.renew()  # the executor, back, finds the lapse and steps down itself
    assert a.longest_stall == 0.0  # its renew() never polled: nothing measured


def test_keep_alive_renews_ahead_when_asked_to():
    # The keeper renews at each of its polls: a stall that starts right after a poll finds almost a full lease left.
    clock = Clock()
    config = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, stall_limit_sec=3.0)
    a = LeaseState(site_id='site_a', shard_id='zone_1', node_id='a', config=config, clock=clock)
    a.take_over()
    clock.now += 0.07
    assert a.keep_alive() is None  # not due by the renew period
    kept = a.keep_alive(every=0.0625)
    assert kept is not None and kept.stamp == clock.now
    assert a.keep_alive(every=0.0625) is None  # just renewed
    clock.now += 0.0625
    assert a.keep_alive(every=0.0625) is not None
    clock.now += 1.0  # stalled past the lease: never revived, however short `every` is
    assert a.keep_alive(every=0.0625) is None and not a.is_leader()


def test_keep_alive_never_revives_a_lapsed_or_fenced_lease():
    clock = Clock()
    a = node('a', clock)
    a.take_over()
    clock.now += 1.0  # lapsed before anything renewed it
    assert a.keep_alive() is None
    b = node('b', clock)
    b.take_over()
    a2 = node('a2', clock)
    a2.take_over()
    a2.note_epoch(b.epoch + 1)  # fenced
    clock.now += 0.3
    assert a2.keep_alive() is None


def test_the_executor_poll_measures_its_stall_and_keeps_the_keeper_quiet():
    clock = Clock()
    a = node('a', clock)
    a.take_over()
    clock.now += 0.3
    assert a.should_renew()
    a.renew()
    clock.now += 0.9
    assert a.should_renew()  # polled after 0.9 s
    assert a.longest_stall == pytest.approx(0.9)
    a.renew()
    clock.now += 0.1
    assert not a.should_renew() and a.keep_alive() is None and a.kept_alive == 0


def test_leases_carry_the_journal_entries_of_the_epoch():
    clock = Clock()
    a = node('a', clock)
    assert a.take_over().last_seq_hint == 0
    a.note_journaled(3)
    clock.now += 0.3
    assert a.renew().last_seq_hint == 3
    a.note_journaled(2)
    clock.now += 0.3
    kept = a.keep_alive()
    assert kept is not None and kept.last_seq_hint == 5
    assert a.renew(last_seq_hint=9, now=clock.now + 0.3).last_seq_hint == 9
    a.note_epoch(a.epoch + 1)  # fenced; a later takeover counts its own epoch from zero
    clock.now += 2.0
    assert a.take_over().last_seq_hint == 0


def test_stall_limit_must_be_a_number_of_seconds():
    with pytest.raises(LeaseConfigError, match='stall_limit_sec'):
        LeaseConfig(stall_limit_sec=-1.0)


def test_a_candidate_leads_only_when_eligible_and_the_lapse_holds_at_two_checks() -> None:
    clock = Clock()
    leader, standby = node('a', clock), node('b', clock)
    candidacy = Candidacy(standby)
    asked: list[float] = []

    def evidence() -> FirstLeaseEvidence:
        asked.append(clock.now)
        return FirstLeaseEvidence(leader_in_graph=False, others_on_lease_topic=True, agents_epoch=0)

    standby.observe(leader.take_over())
    clock.now += 5.0  # the lease lapsed long ago
    assert not candidacy.lapse_confirmed(clock.now, evidence)  # not eligible (its node is not active)
    assert not candidacy.lapse_confirmed(clock.now, evidence)
    candidacy.activate(clock.now)
    assert not candidacy.lapse_confirmed(clock.now, evidence)  # first check: maybe our own stall
    assert candidacy.lapse_confirmed(clock.now, evidence)  # still lapsed one check later
    assert asked == []  # a lease was seen: no first-lease evidence needed
    candidacy.eligible = False
    assert not candidacy.lapse_confirmed(clock.now, evidence)
    candidacy.activate(clock.now)
    assert not candidacy.lapse_confirmed(clock.now, evidence)  # the count starts again


def test_a_candidate_that_never_saw_a_lease_waits_as_the_evidence_says() -> None:
    clock = Clock()
    config = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, first_lease_wait_sec=2.0)
    lease = LeaseState(site_id='site_a', shard_id='zone_1', node_id='b', config=config, clock=clock)
    candidacy = Candidacy(lease)
    live_leader = FirstLeaseEvidence(leader_in_graph=True, others_on_lease_topic=True, agents_epoch=0)
    peers_only = FirstLeaseEvidence(leader_in_graph=False, others_on_lease_topic=True, agents_epoch=0)
    clock.now += 50.0  # started long ago: the wait counts from becoming eligible
    candidacy.activate(clock.now)
    clock.now += 2.5  # past first_lease_wait_sec, far from LEADER_LEASE_MAX_WAIT_SEC
    assert candidacy.first_lease_on_its_way(clock.now, lambda: live_leader)
    assert not candidacy.lapse_confirmed(clock.now, lambda: live_leader)
    assert not candidacy.lapse_confirmed(clock.now, lambda: live_leader)
    assert not candidacy.first_lease_on_its_way(clock.now, lambda: peers_only)
    assert not candidacy.lapse_confirmed(clock.now, lambda: peers_only)  # the first check of the lapse
    assert candidacy.lapse_confirmed(clock.now, lambda: peers_only)

import dataclasses
import itertools
import random

import pytest

from fleet_core.config import DispatchSettings
from fleet_core.dispatcher import ADOPTED_FATE_WAIT_SEC, CommandDispatcher, SubmitError
from fleet_core.model import Ack, AckStatus, Outcome, Priority
from fleet_core.stats import RetryTimeout


def make(clock, agents=('a1', 'a2', 'a3'), **settings):
    counter = itertools.count()
    return CommandDispatcher(
        site_id='s',
        shard_id='z',
        agents=agents,
        epoch=1,
        settings=DispatchSettings(**settings),
        clock=clock,
        rng=random.Random(7),
        id_factory=lambda: f'id{next(counter)}',
    )


def ack(command, status, **kw):
    return Ack.for_command(command, status, **kw)


def test_fan_out_sends_one_command_per_agent_at_once(clock):
    d = make(clock)
    d.submit([], 'noop', '{}', Priority.NORMAL, 10.0)
    out = d.take()
    assert sorted(c.agent_id for c in out.sends) == ['a1', 'a2', 'a3']
    assert all(c.seq == 1 and c.attempt == 1 and c.epoch == 1 for c in out.sends)
    assert len({c.trace_id for c in out.sends}) == 1
    for c in out.sends:
        d.on_ack(ack(c, AckStatus.ACCEPTED))
        d.on_ack(ack(c, AckStatus.SUCCEEDED))
    results = d.take().results
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 3
    assert d.stats().succeeded == 3 and d.stats().in_flight == 0


def test_window_priority_order_and_safety_bypass(clock):
    d = make(clock, agents=('a1',))
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)
    first = d.take().sends
    d.submit(['a1'], 'noop', '{}', Priority.LOW, 10.0)
    d.submit(['a1'], 'noop', '{}', Priority.HIGH, 10.0)
    assert d.take().sends == []  # window of one is busy
    d.submit(['a1'], 'stop', '{}', Priority.SAFETY, 10.0)
    safety = d.take().sends
    assert [c.kind for c in safety] == ['stop'] and safety[0].seq == 2
    d.on_ack(ack(first[0], AckStatus.SUCCEEDED))
    nxt = d.take().sends
    assert [c.priority for c in nxt] == [Priority.HIGH] and nxt[0].seq == 3
    assert d.stats().queue_depth == (1, 0, 0, 0)


def test_retries_resend_the_same_command_then_fail_definitely(clock):
    d = make(clock, agents=('a1',), retry_initial_sec=0.1, retry_max_sec=0.4, retry_budget=3)
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    sent = d.take().sends
    attempts = [sent[0]]
    for _ in range(10):
        clock.advance(0.5)
        d.tick()
        attempts += d.take().sends
    assert [c.attempt for c in attempts] == [1, 2, 3]
    assert {(c.command_id, c.seq) for c in attempts} == {(sent[0].command_id, 1)}
    clock.advance(0.5)
    d.tick()
    assert d.stats().failed == 1 and d.stats().retries == 2


def test_accepted_command_is_not_failed_by_the_budget_and_fails_as_unknown_at_deadline(clock):
    d = make(clock, agents=('a1',), retry_initial_sec=0.1, retry_max_sec=0.4, retry_budget=2, deadline_grace_sec=0.5)
    d.submit(['a1'], 'sleep', '{"duration_sec": 100}', Priority.NORMAL, 5.0)
    c = d.take().sends[0]
    d.on_ack(ack(c, AckStatus.ACCEPTED))
    for _ in range(12):
        clock.advance(0.5)
        d.tick()
    results = d.take().results
    # It may have run (its final ack lost): FAILED claims neither, EXPIRED would say it never ran.
    assert [r.outcome for r in results] == [Outcome.FAILED]
    assert results[0].detail == 'outcome unknown: accepted, no final ack by the deadline'
    d.on_ack(ack(c, AckStatus.SUCCEEDED))  # late: already terminal
    assert d.take().results == [] and d.stats().duplicates_suppressed == 1


def test_queued_commands_expire_without_being_sent(clock):
    d = make(clock, agents=('a1',))
    d.submit(['a1'], 'sleep', '{"duration_sec": 5}', Priority.NORMAL, 60.0)
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 1.0)
    d.take()
    clock.advance(2.0)
    d.tick()
    out = d.take()
    assert [r.outcome for r in out.results] == [Outcome.EXPIRED]
    assert out.sends == [] or all(c.kind != 'noop' for c in out.sends)


@pytest.mark.parametrize(
    ('status', 'outcome'),
    [
        (AckStatus.FAILED, Outcome.FAILED),
        (AckStatus.REJECTED_EXPIRED, Outcome.EXPIRED),
        (AckStatus.REJECTED_INVALID, Outcome.REJECTED),
        (AckStatus.REJECTED_DUPLICATE, Outcome.REJECTED),
        (AckStatus.CANCELLED, Outcome.CANCELLED),
    ],
)
def test_final_ack_maps_to_one_outcome(clock, status, outcome):
    d = make(clock, agents=('a1',), retry_budget=1)  # one delivery: REJECTED_DUPLICATE is not renumbered
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)
    c = d.take().sends[0]
    d.on_ack(ack(c, status, detail='why'))
    d.on_ack(ack(c, status, detail='why'))
    results = d.take().results
    assert [r.outcome for r in results] == [outcome]


def stale_epoch(command, epoch):
    """The agent names the newer epoch that fences the sender."""
    return dataclasses.replace(ack(command, AckStatus.REJECTED_STALE_EPOCH), epoch=epoch)


def test_stale_epoch_ack_marks_the_dispatcher_fenced(clock):
    d = make(clock, agents=('a1',))
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)
    d.on_ack(stale_epoch(d.take().sends[0], 3))
    assert d.fenced and d.fenced_by == 3


@pytest.mark.parametrize(
    ('agents', 'kind', 'ttl', 'message'),
    [
        (['ghost'], 'noop', 1.0, 'unknown agent'),
        (['a1'], 'warp', 1.0, 'unknown kind'),
        (['a1'], 'noop', 0.0, 'ttl'),
        (['a1'], 'noop', -3.0, 'ttl'),
        (['a1'], 'noop', 1e9, 'ttl'),
    ],
)
def test_bad_submissions_queue_nothing(clock, agents, kind, ttl, message):
    d = make(clock)
    with pytest.raises(SubmitError, match=message):
        d.submit(agents, kind, '{}', Priority.NORMAL, ttl)
    assert not d.take() and d.stats().submitted == 0


def test_low_is_shed_under_degradation_and_full_queues_refuse_others(clock):
    d = make(clock, agents=('a1',), max_queue_per_agent=2)
    d.degradation_level = 2
    d.submit(['a1'], 'noop', '{}', Priority.LOW, 10.0)
    assert [r.detail for r in d.take().results] == ['shed by backpressure (LOW priority)']
    d.degradation_level = 0
    for _ in range(3):
        d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)
    with pytest.raises(SubmitError, match='queue full'):
        d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)


def test_adopted_commands_keep_their_identity_and_get_new_seqs(clock):
    old = make(clock, agents=('a1',))
    old.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)
    old.submit(['a1'], 'noop', '{}', Priority.HIGH, 10.0)
    old.take()
    pending = old.pending()
    new = CommandDispatcher(
        site_id='s',
        shard_id='z',
        agents=['a1'],
        epoch=2,
        settings=DispatchSettings(),
        clock=clock,
        seq_base={'a1': old.last_seq('a1') + 1000},
    )
    new.adopt(pending)
    sent = new.take().sends
    assert len(sent) == 1 and sent[0].epoch == 2 and sent[0].seq == 1002
    assert sent[0].command_id in {c.command_id for c in pending}
    assert {c.command_id for c in new.pending()} == {c.command_id for c in pending}


def test_cancel_queued_on_estop(clock):
    d = make(clock, agents=('a1',))
    for _ in range(3):
        d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0)
    d.take()
    assert d.cancel_queued('e-stop') == 2
    assert [r.outcome for r in d.take().results] == [Outcome.CANCELLED] * 2


def test_caller_chosen_command_ids_are_idempotent_while_pending(clock):
    d = make(clock, agents=('a1', 'a2'))
    first = d.submit(['a1', 'a2'], 'noop', '{}', Priority.NORMAL, 10.0, command_ids=['step-1', 'step-2'])
    assert [c.command_id for c in first] == ['step-1', 'step-2']
    again = d.submit(['a1', 'a2'], 'noop', '{}', Priority.NORMAL, 10.0, command_ids=['step-1', 'step-3'])
    assert [c.command_id for c in again] == ['step-3']  # step-1 is still in flight: not queued twice
    with pytest.raises(SubmitError, match='one id per target'):
        d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 10.0, command_ids=['x', 'y'])


def test_retry_timeout_follows_measured_first_acks_within_bounds():
    timeout = RetryTimeout(floor=0.2, ceiling=4.0)
    assert timeout.value == 0.2  # nothing measured yet
    for _ in range(20):
        timeout.sample(0.01)
    assert timeout.value == 0.2  # a quick shard keeps the floor
    for _ in range(20):
        timeout.sample(1.0)
    assert 1.0 < timeout.value < 4.0
    for _ in range(20):
        timeout.sample(30.0)
    assert timeout.value == 4.0


def test_retries_wait_for_the_learnt_timeout_when_acks_are_slow(clock):
    d = make(clock, agents=('a1', 'a2', 'a3'), retry_initial_sec=0.1, retry_max_sec=4.0)
    for _ in range(4):  # a loaded shard: every first ack takes a second
        d.submit([], 'noop', '{}', Priority.NORMAL, 30.0)
        sent = d.take().sends
        clock.advance(1.0)
        for c in sent:
            d.on_ack(ack(c, AckStatus.SUCCEEDED))
        d.take()
    assert d.stats().retries == 0
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    d.take()
    clock.advance(1.0)
    d.tick()
    assert d.take().sends == []  # not yet: the measured time to first ack is ~1 s, not the 0.1 s floor
    clock.advance(4.0)
    d.tick()
    assert [c.attempt for c in d.take().sends] == [2]


def test_a_stale_epoch_rejection_fences_the_dispatcher_without_deciding_the_command(clock):
    d = make(clock, agents=('a1',))
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    sent = d.take().sends[0]
    d.on_ack(stale_epoch(sent, 2))
    assert d.fenced
    assert d.take().results == []  # the newer leader announces its fate, not this one
    assert [c.command_id for c in d.pending()] == [sent.command_id]  # handed back to the hot copy on stepping down


def test_a_seq_below_the_agents_applied_seq_is_renumbered_and_sent_again(clock):
    # A leader that took over before hearing an agent's heartbeat numbers its commands too low.
    d = make(clock, agents=('a1',))
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    first = d.take().sends[0]
    d.on_ack(ack(first, AckStatus.REJECTED_DUPLICATE, detail=f'seq {first.seq} <= last applied 900'))
    out = d.take()
    assert out.results == []
    (again,) = out.sends
    assert again.command_id == first.command_id and again.seq >= first.seq + 1000 and again.attempt == 2
    d.on_ack(ack(again, AckStatus.SUCCEEDED))
    assert [r.outcome for r in d.take().results] == [Outcome.SUCCEEDED]


def test_a_duplicate_rejection_of_an_old_seq_never_ends_a_renumbered_command(clock):
    # Issue 12, item 1: seq 1 attempt 1; retry seq 1 attempt 2; the first REJECTED_DUPLICATE renumbers the command
    # (SEQ_GAP); the REJECTED_DUPLICATE answering attempt 2 then arrives. It answers a delivery no longer in flight:
    # were it applied, the command would be announced REJECTED while its seq-1001 delivery executes.
    d = make(clock, agents=('a1',), retry_initial_sec=0.1, retry_max_sec=0.4)
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    first = d.take().sends[0]
    clock.advance(0.5)
    d.tick()
    (second,) = d.take().sends
    assert (first.seq, first.attempt, second.seq, second.attempt) == (1, 1, 1, 2)
    d.on_ack(ack(first, AckStatus.REJECTED_DUPLICATE, detail='seq 1 <= last applied 900'))
    (renumbered,) = d.take().sends
    assert renumbered.seq == 1001 and renumbered.command_id == first.command_id
    d.on_ack(ack(second, AckStatus.REJECTED_DUPLICATE, detail='seq 1 <= last applied 900'))
    out = d.take()
    assert out.results == [] and out.sends == []
    assert [h.status for h in out.hops] == ['IGNORED'] and 'seq 1 attempt 2' in out.hops[0].detail
    assert [c.command_id for c in d.pending()] == [first.command_id]
    d.on_ack(ack(renumbered, AckStatus.SUCCEEDED))
    assert [(r.outcome, r.seq) for r in d.take().results] == [(Outcome.SUCCEEDED, 1001)]
    stats = d.stats()
    assert (stats.succeeded, stats.rejected, stats.acks_ignored, stats.duplicates_suppressed) == (1, 0, 1, 0)


def sent_twice(clock):
    """One command delivered twice (seq 1, attempts 1 and 2) to a1 of a1..a2."""
    d = make(clock, agents=('a1', 'a2'), retry_initial_sec=0.1, retry_max_sec=0.4)
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    first = d.take().sends[0]
    clock.advance(0.5)
    d.tick()
    (second,) = d.take().sends
    return d, first, second


@pytest.mark.parametrize(
    ('forge', 'why'),
    [
        (lambda c: dataclasses.replace(c, agent_id='a2'), "from 'a2', sent to 'a1'"),
        (lambda c: dataclasses.replace(c, seq=7), 'answers seq 7'),
        (lambda c: dataclasses.replace(c, epoch=2), 'answers epoch 2'),
        (lambda c: dataclasses.replace(c, epoch=0), 'answers epoch 0'),
        (lambda c: dataclasses.replace(c, attempt=3), 'attempt 3'),  # never sent
        (lambda c: dataclasses.replace(c, attempt=0), 'attempt 0'),
    ],
)
@pytest.mark.parametrize('status', [AckStatus.SUCCEEDED, AckStatus.FAILED, AckStatus.REJECTED_INVALID])
def test_an_ack_not_answering_the_delivery_in_flight_is_counted_never_applied(clock, forge, why, status):
    d, _, second = sent_twice(clock)
    d.on_ack(forge(ack(second, status)))
    out = d.take()
    assert out.results == []
    assert [(h.hop, h.status, h.command_id) for h in out.hops] == [('ACK', 'IGNORED', second.command_id)]
    assert why in out.hops[0].detail and status.name in out.hops[0].detail
    assert d.stats().acks_ignored == 1
    d.on_ack(ack(second, status))  # the genuine answer still decides
    assert len(d.take().results) == 1


@pytest.mark.parametrize(
    ('status', 'applied'),
    [
        (AckStatus.SUCCEEDED, True),  # the command id ran: no later attempt of the seq changes that
        (AckStatus.FAILED, True),
        (AckStatus.CANCELLED, True),
        (AckStatus.REJECTED_EXPIRED, False),  # the earlier delivery arrived late; the one in flight may still run
        (AckStatus.REJECTED_ESTOPPED, False),
        (AckStatus.REJECTED_INVALID, False),
        (AckStatus.REJECTED_SAFE_MODE, False),
    ],
)
def test_an_earlier_attempt_of_the_seq_in_flight_decides_only_what_it_can_know(clock, status, applied):
    d, first, _ = sent_twice(clock)
    d.on_ack(ack(first, status))
    results = d.take().results
    assert len(results) == (1 if applied else 0)
    assert d.stats().acks_ignored == (0 if applied else 1)


def test_a_stale_epoch_rejection_not_naming_a_newer_epoch_does_not_fence(clock):
    d = make(clock, agents=('a1',))
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    sent = d.take().sends[0]
    d.on_ack(stale_epoch(sent, 1))  # our own epoch: forged, or an agent that names no newer epoch
    d.on_ack(stale_epoch(dataclasses.replace(sent, agent_id='a2'), 9))  # not sent to that agent
    d.on_ack(stale_epoch(dataclasses.replace(sent, seq=4), 9))  # answers no delivery of ours
    assert not d.fenced and d.fenced_by == 0
    assert d.stats().acks_ignored == 3
    assert [c.command_id for c in d.pending()] == [sent.command_id]


def test_no_ack_by_the_deadline_is_an_unknown_fate_not_an_expiry(clock):
    d = make(clock, agents=('a1',), retry_initial_sec=0.1, retry_max_sec=0.4, retry_budget=100, deadline_grace_sec=0.5)
    d.submit(['a1'], 'noop', '{}', Priority.NORMAL, 2.0)
    d.take()
    for _ in range(8):
        clock.advance(0.5)
        d.tick()
    (result,) = d.take().results
    assert (result.outcome, result.detail) == (Outcome.FAILED, 'outcome unknown: no ack by the deadline')


def test_adopted_commands_past_their_deadline_are_asked_about_never_declared_expired(clock):
    # The previous leader may have delivered them (they may have run): only their agent can say.
    old = make(clock, agents=('a1', 'a2'))
    old.submit(['a1', 'a2'], 'noop', '{}', Priority.NORMAL, 1.0)
    old.submit(['a1'], 'noop', '{}', Priority.LOW, 1.0)
    old.take()
    pending = old.pending()
    clock.advance(5.0)
    new = make(clock, agents=('a1', 'a2'), deadline_grace_sec=0.5)
    new.degradation_level = 2  # LOW would be shed if it were new
    new.adopt(pending)
    assert new.cancel_queued('e-stop') == 0
    new.tick()  # the queued LOW one is past its deadline too
    out = new.take()
    assert out.results == [] and {c.agent_id for c in out.sends} == {'a1', 'a2'}
    first_a1 = next(c for c in out.sends if c.agent_id == 'a1')
    new.on_ack(ack(first_a1, AckStatus.SUCCEEDED))  # it had run under the old leader
    answered = new.take()  # the window frees: the adopted LOW one goes out too
    assert [r.outcome for r in answered.results] == [Outcome.SUCCEEDED]
    assert [c.priority for c in answered.sends] == [Priority.LOW]
    clock.advance(0.4)
    new.tick()
    assert [r.outcome for r in new.take().results] == []  # still within grace of its first sending
    clock.advance(0.2)
    new.tick()
    out = new.take()
    # Past grace, fate unknown: their agents are asked again (another replica or the agent may know), not guessed.
    assert out.results == [] and sorted(c.agent_id for c in out.sends) == ['a1', 'a2']
    for _ in range(int(ADOPTED_FATE_WAIT_SEC / 4.0) + 2):
        clock.advance(4.0)
        new.tick()
    results = {r.agent_id + str(r.outcome.name) for r in new.take().results}
    assert results == {'a2FAILED', 'a1FAILED'}  # never answered within the bounded wait: fate unknown


def test_an_adopted_command_the_agent_answers_late_gets_the_stored_fate_not_failed(clock):
    # Seed 3 of the chaos campaign: the agent is unreachable past deadline + grace; a replica that adopted the
    # command must not announce FAILED while the agent (or a peer's hand-over) may still report SUCCEEDED.
    old = make(clock, agents=('a1',))
    old.submit(['a1'], 'noop', '{}', Priority.NORMAL, 1.0)
    old.take()
    new = make(clock, agents=('a1',), deadline_grace_sec=0.5)
    new.adopt(old.pending())
    new.take()
    sends = []
    for _ in range(10):  # 10 s: deadline and grace long past
        clock.advance(1.0)
        new.tick()
        out = new.take()
        assert out.results == []
        sends += out.sends
    assert sends, 'the agent is asked again while its fate is unknown'
    new.on_ack(ack(sends[-1], AckStatus.SUCCEEDED, detail='stored fate'))
    assert [r.outcome for r in new.take().results] == [Outcome.SUCCEEDED]


def test_an_outcome_handed_over_by_another_replica_settles_an_adopted_command(clock):
    old = make(clock, agents=('a1',))
    old.submit(['a1'], 'noop', '{}', Priority.NORMAL, 1.0)
    old.submit(['a1'], 'noop', '{}', Priority.NORMAL, 1.0)
    old.take()
    pending = old.pending()
    first = next(c for c in pending if c.seq > 0)  # the peer's in-flight one; the other is queued behind it
    new = make(clock, agents=('a1',))
    new.adopt(pending)
    (sent,) = new.take().sends
    queued = next(c for c in pending if c.command_id != sent.command_id)
    old.on_ack(ack(first, AckStatus.SUCCEEDED))  # the peer replica decided it (its dispatcher stands in for it)
    peer_result = next(r for r in old.take().results if r.command_id == first.command_id)
    assert old.settle(peer_result) is False  # not pending there any more
    assert new.settle(peer_result) is True
    out = new.take()
    assert [(r.command_id, r.outcome) for r in out.results] == [(sent.command_id, Outcome.SUCCEEDED)]
    assert [c.command_id for c in out.sends] == [queued.command_id]  # the window freed
    assert new.settle(peer_result) is False  # the first decision wins: never decided twice
    new.on_ack(ack(sent, AckStatus.FAILED))
    assert new.take().results == []


def test_a_final_ack_answering_the_previous_leaders_delivery_prompts_asking_again(clock):
    # The agent ran the old leader's delivery; its SUCCEEDED names that delivery. The new leader does not apply it
    # (nothing ties it to its own delivery) but asks again at once: the agent answers with the stored fate.
    old = make(clock, agents=('a1',))
    old.submit(['a1'], 'noop', '{}', Priority.NORMAL, 30.0)
    ran = old.take().sends[0]
    new = CommandDispatcher(
        site_id='s', shard_id='z', agents=['a1'], epoch=2, settings=DispatchSettings(retry_initial_sec=0.1),
        clock=clock, seq_base={'a1': 1000},
    )  # fmt: skip
    new.adopt(old.pending())
    mine = new.take().sends[0]
    new.on_ack(ack(mine, AckStatus.ACCEPTED, detail='already executing'))
    clock.advance(0.05)
    new.tick()
    assert new.take().sends == []  # accepted: re-asked only every retry_max_sec
    new.on_ack(ack(ran, AckStatus.SUCCEEDED))
    assert new.take().results == [] and new.stats().acks_ignored == 1
    new.tick()
    (again,) = new.take().sends
    assert (again.command_id, again.seq, again.epoch, again.attempt) == (ran.command_id, mine.seq, 2, 2)
    new.on_ack(ack(again, AckStatus.SUCCEEDED))
    assert [r.outcome for r in new.take().results] == [Outcome.SUCCEEDED]

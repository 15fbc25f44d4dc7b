import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.config import IntakeSettings
from fleet_core.dedup_store import DedupStore
from fleet_core.intake import CommandIntake
from fleet_core.kinds import KindRegistry
from fleet_core.model import AckStatus, Command, Priority


def make_intake(tmp_path, clock, name='agent.sqlite'):
    return CommandIntake(
        agent_id='r1',
        shard_id='z1',
        store=DedupStore(tmp_path / name),
        kinds=KindRegistry(),
        settings=IntakeSettings(clock_skew_tolerance_sec=0.0, max_ttl_sec=600.0),
        clock=clock,
    )


def cmd(clock, command_id='c1', seq=1, epoch=1, ttl=10.0, kind='noop', args='{}', priority=Priority.NORMAL, **kw):
    base = dict(
        command_id=command_id,
        trace_id='t1',
        site_id='s',
        shard_id='z1',
        agent_id='r1',
        seq=seq,
        epoch=epoch,
        priority=priority,
        issued_at=clock(),
        deadline=clock() + ttl,
        kind=kind,
        args_json=args,
        attempt=1,
    )
    base.update(kw)
    return Command(**base)


def test_accept_then_complete_then_redelivery_gets_the_stored_ack(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    first = intake.receive(cmd(clock))
    assert first.execute and first.ack.status == AckStatus.ACCEPTED
    during = intake.receive(cmd(clock))
    assert not during.execute and during.ack.status == AckStatus.ACCEPTED
    final = intake.complete(cmd(clock), AckStatus.SUCCEEDED)
    assert final.status == AckStatus.SUCCEEDED and final.final
    again = intake.receive(cmd(clock))
    assert not again.execute and again.ack.status == AckStatus.SUCCEEDED
    assert intake.duplicates_suppressed == 2


def test_decision_order_epoch_before_deadline_before_dedup(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    assert intake.receive(cmd(clock, 'new', seq=1, epoch=5)).execute
    intake.complete(cmd(clock, 'new', seq=1, epoch=5), AckStatus.SUCCEEDED)
    stale_and_late = cmd(clock, 'old', seq=2, epoch=4, ttl=1.0)
    expired = cmd(clock, 'late', seq=3, epoch=5, ttl=1.0)
    clock.advance(2.0)
    assert intake.receive(stale_and_late).ack.status == AckStatus.REJECTED_STALE_EPOCH
    assert intake.receive(expired).ack.status == AckStatus.REJECTED_EXPIRED


def test_lower_seq_with_new_id_is_a_duplicate(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    assert intake.receive(cmd(clock, 'a', seq=5)).execute
    assert intake.receive(cmd(clock, 'b', seq=5)).ack.status == AckStatus.REJECTED_DUPLICATE
    assert intake.receive(cmd(clock, 'c', seq=4)).ack.status == AckStatus.REJECTED_DUPLICATE
    assert intake.receive(cmd(clock, 'd', seq=6)).execute


def test_restart_during_execution_never_reruns(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    command = cmd(clock)
    assert intake.receive(command).execute
    # crash: no complete(); a new process opens the same store
    restarted = make_intake(tmp_path, clock)
    decision = restarted.receive(command)
    assert not decision.execute
    assert decision.ack.status == AckStatus.FAILED
    assert 'restart' in decision.ack.detail
    assert restarted.receive(command).ack.status == AckStatus.FAILED


def test_estop_refuses_all_but_safety(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    intake.estopped = True
    assert intake.receive(cmd(clock, 'a', seq=1)).ack.status == AckStatus.REJECTED_ESTOPPED
    assert intake.receive(cmd(clock, 'b', seq=2, kind='stop', priority=Priority.SAFETY)).execute


def test_paused_agent_refuses_normal_and_low_but_runs_high_and_safety(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    assert intake.receive(cmd(clock, 'p', seq=1, kind='pause', priority=Priority.HIGH)).execute
    intake.set_paused(True)
    intake.complete(cmd(clock, 'p', seq=1, kind='pause', priority=Priority.HIGH), AckStatus.SUCCEEDED)
    for seq, priority in ((2, Priority.NORMAL), (3, Priority.LOW)):
        refused = intake.receive(cmd(clock, f'n{seq}', seq=seq, priority=priority))
        assert not refused.execute
        assert refused.ack.status == AckStatus.REJECTED_PAUSED and refused.ack.final
        assert 'paused' in refused.ack.detail and 'HIGH and SAFETY' in refused.ack.detail
    # A refusal applies nothing: the seq stays free for the next command.
    assert intake.last_applied_seq == 1
    assert intake.receive(cmd(clock, 'h', seq=2, priority=Priority.HIGH)).execute
    assert intake.receive(cmd(clock, 's', seq=3, kind='stop', priority=Priority.SAFETY)).execute
    intake.set_paused(False)
    assert intake.receive(cmd(clock, 'n4', seq=4)).execute


def test_pause_survives_a_restart_until_resumed(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    intake.set_paused(True)
    intake.close()
    restarted = make_intake(tmp_path, clock)
    assert restarted.paused
    assert restarted.receive(cmd(clock, 'n', seq=1)).ack.status == AckStatus.REJECTED_PAUSED
    restarted.set_paused(False)
    restarted.close()
    again = make_intake(tmp_path, clock)
    assert not again.paused and again.receive(cmd(clock, 'n', seq=1)).execute


def test_corrupt_store_means_safe_mode(tmp_path, clock):
    path = tmp_path / 'bad.sqlite'
    path.write_bytes(b'garbage' * 1000)
    from fleet_core.dedup_store import StoreUnavailable

    with pytest.raises(StoreUnavailable) as info:
        DedupStore(path)
    intake = CommandIntake(
        agent_id='r1',
        shard_id='z1',
        store=None,
        kinds=KindRegistry(),
        settings=IntakeSettings(),
        clock=clock,
        safe_mode_reason=str(info.value),
    )
    decision = intake.receive(cmd(clock))
    assert not decision.execute
    assert decision.ack.status == AckStatus.REJECTED_SAFE_MODE
    assert 'bad.sqlite' in decision.ack.detail


@pytest.mark.parametrize(
    ('changes', 'reason'),
    [
        ({'command_id': ''}, 'command_id'),
        ({'command_id': 'x' * 100}, 'command_id'),
        ({'agent_id': 'r2'}, 'addressed to'),
        ({'shard_id': 'other'}, 'shard'),
        ({'epoch': 0}, 'epoch'),
        ({'seq': 0}, 'seq'),
        ({'attempt': 0}, 'attempt'),
        ({'deadline': float('nan')}, 'finite'),
    ],
)
def test_malformed_commands_are_rejected_invalid(tmp_path, clock, changes, reason):
    intake = make_intake(tmp_path, clock)
    decision = intake.receive(cmd(clock, **changes))
    assert not decision.execute
    assert decision.ack.status == AckStatus.REJECTED_INVALID
    assert reason in decision.ack.detail


def test_absurd_deadline_and_bad_arguments(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    far = intake.receive(cmd(clock, ttl=10_000.0))
    assert far.ack.status == AckStatus.REJECTED_INVALID and 'absurdly far' in far.ack.detail
    bad = intake.receive(cmd(clock, 'g', seq=2, kind='goto', args=json.dumps({'x': 'a', 'y': 1})))
    assert bad.ack.status == AckStatus.REJECTED_INVALID
    huge = intake.receive(cmd(clock, 'h', seq=3, args=json.dumps({'blob': 'x' * 100_000})))
    assert huge.ack.status == AckStatus.REJECTED_INVALID


hostile = st.builds(
    dict,
    command_id=st.text(max_size=80),
    seq=st.integers(min_value=-5, max_value=2**64),
    epoch=st.integers(min_value=-5, max_value=2**64),
    ttl=st.floats(allow_nan=True, allow_infinity=True, width=32),
    kind=st.sampled_from(['noop', 'goto', 'sleep', 'stop', '', 'x' * 300]),
    args=st.one_of(st.text(max_size=100), st.just('{"x": 1, "y": 2}'), st.just('{"duration_sec": -1}')),
    priority=st.sampled_from(list(Priority)),
    attempt=st.integers(min_value=0, max_value=10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(hostile, max_size=12))
def test_hostile_input_never_crashes_or_runs_twice(tmp_path_factory, commands):
    from conftest import FakeClock

    clock = FakeClock()
    intake = make_intake(tmp_path_factory.mktemp('hostile'), clock)
    executed: set[str] = set()
    for fields in commands:
        decision = intake.receive(cmd(clock, **fields))
        if decision.execute:
            assert fields['command_id'] not in executed
            executed.add(fields['command_id'])
            intake.complete(cmd(clock, **fields), AckStatus.SUCCEEDED)
        else:
            assert decision.ack.status.is_final or decision.ack.status == AckStatus.ACCEPTED


def test_a_late_redelivery_of_an_executed_command_gets_its_fate_not_an_expiry(tmp_path, clock):
    # Its final ack was lost; the retry, sent in time, arrives after the deadline. REJECTED_EXPIRED would have the
    # shard announce EXPIRED ("never ran") for a command that ran.
    intake = make_intake(tmp_path, clock)
    done, running = cmd(clock, 'done', seq=1, ttl=1.0), cmd(clock, 'running', seq=2, ttl=1.0)
    assert intake.receive(done).execute and intake.receive(running).execute
    intake.complete(done, AckStatus.SUCCEEDED)
    clock.advance(5.0)
    assert intake.receive(done).ack.status == AckStatus.SUCCEEDED
    assert (intake.receive(running).ack.status, intake.receive(running).ack.detail) == (
        AckStatus.ACCEPTED,
        'already executing',
    )
    assert intake.receive(cmd(clock, 'new', seq=3, ttl=-1.0, issued_at=clock() - 2.0)).ack.status == (
        AckStatus.REJECTED_EXPIRED
    )


def test_a_stale_epoch_rejection_names_the_epoch_that_fences_the_sender(tmp_path, clock):
    intake = make_intake(tmp_path, clock)
    assert intake.receive(cmd(clock, 'a', seq=1, epoch=7)).execute
    ack = intake.receive(cmd(clock, 'b', seq=2, epoch=3)).ack
    assert (ack.status, ack.epoch, ack.seq) == (AckStatus.REJECTED_STALE_EPOCH, 7, 2)

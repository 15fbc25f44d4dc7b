"""The outcome-truth checker: each rule on a hand-made history, the adapters from the agent's store, and a property
test (a truthful history passes; any one corruption of it is reported as the violation it is)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from fleet_core.config import IntakeSettings
from fleet_core.dedup_store import DedupStore
from fleet_core.history import (
    Announcement,
    ExecResult,
    Execution,
    Submission,
    ViolationKind,
    check_history,
    execution_from_store,
    result_of_status_name,
)
from fleet_core.intake import CommandIntake
from fleet_core.kinds import KindRegistry
from fleet_core.model import AckStatus, Command, Outcome, Priority

T0 = 1_700_000_000.0
K = ViolationKind


def run(command_id='c1', agent='a1', result=ExecResult.SUCCEEDED, epoch=1, at=T0 + 1.0, **kw):
    return Execution(agent, command_id, epoch, started_at=at, deadline=T0 + 10.0, result=result, **kw)


def said(outcome, command_id='c1', agent='a1'):
    return Announcement(command_id, agent, outcome)


def sub(command_id='c1', agent='a1'):
    return Submission(command_id, agent, deadline=T0 + 10.0)


ONE_SUBMITTED = (Submission('c1', 'a1', deadline=T0 + 10.0),)


def kinds(announcements=(), executions=(), submissions=ONE_SUBMITTED, **kw):
    verdict = check_history(announcements=announcements, executions=executions, submissions=submissions, **kw)
    return [v.kind for v in verdict.violations]


@pytest.mark.parametrize(
    ('outcome', 'ran'),
    [
        (Outcome.SUCCEEDED, [ExecResult.SUCCEEDED]),
        (Outcome.SUCCEEDED, [ExecResult.UNKNOWN]),  # a start-only record cannot contradict it
        (Outcome.FAILED, []),
        (Outcome.FAILED, [ExecResult.FAILED]),
        (Outcome.FAILED, [ExecResult.SUCCEEDED]),  # fate unknown to the shard (acks lost): FAILED claims neither
        (Outcome.FAILED, [ExecResult.INTERRUPTED]),
        (Outcome.CANCELLED, []),
        (Outcome.CANCELLED, [ExecResult.CANCELLED]),
        (Outcome.REJECTED, []),
        (Outcome.EXPIRED, []),
    ],
)
def test_outcomes_that_tell_the_truth_pass(outcome, ran):
    assert kinds([said(outcome)], [run(result=r) for r in ran]) == []


@pytest.mark.parametrize(
    ('outcome', 'ran', 'why'),
    [
        (Outcome.SUCCEEDED, [], 'it never ran'),
        (Outcome.SUCCEEDED, [ExecResult.FAILED], 'ended failed'),
        (Outcome.SUCCEEDED, [ExecResult.INTERRUPTED], 'ended interrupted'),
        (Outcome.REJECTED, [ExecResult.SUCCEEDED], 'it ran'),
        (Outcome.REJECTED, [ExecResult.UNKNOWN], 'it ran'),
        (Outcome.EXPIRED, [ExecResult.FAILED], 'it ran'),
        (Outcome.CANCELLED, [ExecResult.SUCCEEDED], 'ended succeeded'),
    ],
)
def test_an_outcome_the_executions_contradict_is_wrong(outcome, ran, why):
    verdict = check_history(announcements=[said(outcome)], executions=[run(result=r) for r in ran], submissions=[sub()])
    (violation,) = verdict.violations
    assert violation.kind == K.WRONG_OUTCOME and violation.command_id == 'c1' and violation.agent_id == 'a1'
    assert why in violation.detail and outcome.name in violation.detail
    assert not verdict.ok and verdict.counts()['wrong_outcome'] == 1


@pytest.mark.parametrize('outcome', list(Outcome))
def test_two_starts_are_a_double_execution_whatever_was_announced(outcome):
    found = kinds([said(outcome)], [run(seq=1), run(seq=1001, at=T0 + 2.0)])
    assert K.DOUBLE_EXECUTION in found
    assert found.count(K.DOUBLE_EXECUTION) == 1


def test_every_submitted_command_needs_an_outcome_and_repeats_must_agree():
    assert kinds([], [], [sub()]) == [K.MISSING_OUTCOME]
    assert kinds([], [], None) == []  # submissions unknown: nothing can be missing
    assert kinds([said(Outcome.SUCCEEDED)] * 2, [run()]) == []  # re-announced by a new leader: harmless
    found = kinds([said(Outcome.FAILED), said(Outcome.REJECTED)], [])
    assert found == [K.CONFLICTING_OUTCOMES]


def test_late_starts_are_judged_against_the_submitted_deadline_with_the_tolerance():
    deadline = T0 + 10.0
    assert kinds([said(Outcome.SUCCEEDED)], [run(at=deadline + 0.2)], tolerance_sec=0.25) == []
    assert kinds([said(Outcome.SUCCEEDED)], [run(at=deadline + 0.3)], tolerance_sec=0.25) == [K.LATE_EXECUTION]
    # A delivery that carried a later deadline than the one submitted does not excuse the start.
    later = dataclasses.replace(run(at=deadline + 5.0), deadline=deadline + 60.0)
    assert kinds([said(Outcome.SUCCEEDED)], [later]) == [K.LATE_EXECUTION]
    assert kinds([said(Outcome.SUCCEEDED)], [later], None) == []  # only the delivery's deadline known
    assert kinds([said(Outcome.SUCCEEDED)], [run(at=None)]) == []  # no time recorded: not judged


def test_a_start_under_a_fenced_epoch_is_reported():
    stated = run(epoch=2, fence_epoch=3)
    assert kinds([said(Outcome.SUCCEEDED)], [stated]) == [K.FENCED_EXECUTION]
    # Shown by the agent's own history: it had already run epoch-3 work, so it had seen epoch 3.
    history = [run('c1', epoch=3, at=T0 + 1.0), run('c2', epoch=2, at=T0 + 2.0)]
    found = check_history(
        announcements=[said(Outcome.SUCCEEDED, 'c1'), said(Outcome.SUCCEEDED, 'c2')],
        executions=history,
        submissions=[sub('c1'), sub('c2')],
    )
    (violation,) = found.violations
    assert (violation.kind, violation.command_id) == (K.FENCED_EXECUTION, 'c2')
    assert 'after c1 ran under epoch 3' in violation.detail
    # A record without an epoch (a start-only test log) is not judged for fencing.
    unknown = [run('c1', epoch=3, at=T0 + 1.0), run('c2', epoch=0, at=T0 + 2.0)]
    assert kinds([said(Outcome.SUCCEEDED, 'c1'), said(Outcome.SUCCEEDED, 'c2')], unknown, [sub('c1'), sub('c2')]) == []
    # Another agent's newer epoch says nothing about this one.
    other = [run('c1', agent='a2', epoch=3), run('c2', epoch=2, at=T0 + 2.0)]
    assert kinds([said(Outcome.SUCCEEDED, 'c1', 'a2'), said(Outcome.SUCCEEDED, 'c2')], other,
                 [sub('c1', 'a2'), sub('c2')]) == []  # fmt: skip


def test_work_on_the_wrong_agent_or_never_submitted_is_reported():
    assert kinds([said(Outcome.SUCCEEDED)], [run(agent='a2')]) == [K.WRONG_AGENT]
    assert kinds([said(Outcome.SUCCEEDED, agent='a2')], [run()]) == [K.WRONG_AGENT]
    found = kinds([], [run('forged')], [])
    assert found == [K.UNSUBMITTED_EXECUTION]


def test_the_verdict_counts_and_renders():
    verdict = check_history(
        announcements=[said(Outcome.REJECTED)], executions=[run(), run(at=T0 + 30.0)], submissions=[sub(), sub('c2')]
    )
    assert (verdict.commands, verdict.executions, verdict.announced) == (2, 2, 1)
    counts = verdict.counts()
    assert set(counts) == {k.value for k in ViolationKind}
    assert (counts['double_execution'], counts['wrong_outcome'], counts['late_execution']) == (1, 1, 1)
    assert counts['missing_outcome'] == 1 and sum(counts.values()) == 4
    assert verdict.of(K.MISSING_OUTCOME)[0].command_id == 'c2'
    assert 'missing_outcome: c2 on a1: submitted, never announced' in verdict.render()
    assert verdict.render(limit=1).endswith('... and 3 more')


def test_the_agents_store_rows_feed_the_checker(tmp_path):
    # One command finished, one interrupted by a crash (started, never finished, then redelivered after restart).
    clock = FakeClock(T0)
    path = str(tmp_path / 'a1.sqlite')

    def intake():
        return CommandIntake(agent_id='a1', shard_id='z', store=DedupStore(path, 'a1'), kinds=KindRegistry(),
                             settings=IntakeSettings(), clock=clock)  # fmt: skip

    def command(command_id, seq):
        return Command(command_id, 't', 's', 'z', 'a1', seq, 1, Priority.NORMAL, T0, T0 + 10.0, 'noop')

    first = intake()
    assert first.receive(command('done', 1)).execute
    first.complete(command('done', 1), AckStatus.SUCCEEDED)
    assert first.receive(command('cut', 2)).execute
    first.close()  # crash while 'cut' runs
    second = intake()
    assert second.receive(command('cut', 2)).ack.status == AckStatus.FAILED
    store = DedupStore(path, 'a1')
    executions = [execution_from_store('a1', store.lookup(c)) for c in ('done', 'cut')]
    store.close()
    second.close()
    assert [(e.command_id, e.result, e.seq, e.epoch) for e in executions] == [
        ('done', ExecResult.SUCCEEDED, 1, 1),
        ('cut', ExecResult.INTERRUPTED, 2, 1),
    ]
    announced = [said(Outcome.SUCCEEDED, 'done'), said(Outcome.FAILED, 'cut')]
    subs = [sub('done'), sub('cut')]
    assert check_history(announcements=announced, executions=executions, submissions=subs).ok
    wrong = [said(Outcome.SUCCEEDED, 'done'), said(Outcome.SUCCEEDED, 'cut')]
    assert kinds(wrong, executions, subs) == [K.WRONG_OUTCOME]


def test_execution_log_status_names_map_to_results():
    assert result_of_status_name('SUCCEEDED') == ExecResult.SUCCEEDED
    assert result_of_status_name('cancelled') == ExecResult.CANCELLED
    assert result_of_status_name('whatever') == ExecResult.UNKNOWN


# -- property: truthful histories pass, any one lie is found -------------------------------------------------------

_TRUE_OUTCOMES = {
    None: [Outcome.REJECTED, Outcome.EXPIRED, Outcome.FAILED, Outcome.CANCELLED],
    ExecResult.SUCCEEDED: [Outcome.SUCCEEDED, Outcome.FAILED],
    ExecResult.FAILED: [Outcome.FAILED],
    ExecResult.CANCELLED: [Outcome.CANCELLED, Outcome.FAILED],
    ExecResult.INTERRUPTED: [Outcome.FAILED],
    ExecResult.UNKNOWN: [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED],
}
_LIES = {
    None: [Outcome.SUCCEEDED],
    ExecResult.SUCCEEDED: [Outcome.REJECTED, Outcome.EXPIRED, Outcome.CANCELLED],
    ExecResult.FAILED: [Outcome.SUCCEEDED, Outcome.REJECTED, Outcome.EXPIRED, Outcome.CANCELLED],
    ExecResult.CANCELLED: [Outcome.SUCCEEDED, Outcome.REJECTED, Outcome.EXPIRED],
    ExecResult.INTERRUPTED: [Outcome.SUCCEEDED, Outcome.REJECTED, Outcome.EXPIRED, Outcome.CANCELLED],
    ExecResult.UNKNOWN: [Outcome.REJECTED, Outcome.EXPIRED],
}

fate = st.tuples(
    st.sampled_from(['a1', 'a2', 'a3']),
    st.sampled_from([None, *ExecResult]),
    st.integers(1, 3),  # epoch
    st.integers(0, 10**6),  # chooses the true outcome and how many times it is announced
)


def truthful(fates):
    submissions, announcements, executions = [], [], []
    for i, (agent, result, epoch, pick) in enumerate(fates):
        command_id = f'c{i}'
        started = T0 + epoch * 1000.0 + i  # an agent runs epochs in order: never fenced
        submissions.append(Submission(command_id, agent, deadline=started + 5.0))
        outcomes = _TRUE_OUTCOMES[result]
        for _ in range(1 + pick % 2):
            announcements.append(Announcement(command_id, agent, outcomes[pick % len(outcomes)]))
        if result is not None:
            executions.append(Execution(agent, command_id, epoch, started, started + 5.0, result, seq=i + 1))
    return submissions, announcements, executions


corruption = st.sampled_from(['double', 'lie', 'missing', 'conflict', 'late', 'fenced', 'unsubmitted', 'agent'])


@settings(max_examples=300, deadline=None)
@given(st.lists(fate, min_size=1, max_size=12), corruption, st.integers(0, 10**6))
def test_truthful_histories_pass_and_any_one_corruption_is_found(fates, how, pick):
    submissions, announcements, executions = truthful(fates)
    verdict = check_history(announcements=announcements, executions=executions, submissions=submissions)
    assert verdict.ok, verdict.render()
    assert verdict.executions == len(executions) and verdict.commands == len(fates)

    ran = list(executions)
    if how in ('double', 'late', 'fenced', 'unsubmitted') and not ran:
        return
    victim = ran[pick % len(ran)] if ran else None
    target = victim.command_id if victim is not None else f'c{pick % len(fates)}'
    result = next((e.result for e in executions if e.command_id == target), None)
    expected = {
        'double': K.DOUBLE_EXECUTION,
        'lie': K.WRONG_OUTCOME,
        'missing': K.MISSING_OUTCOME,
        'conflict': K.CONFLICTING_OUTCOMES,
        'late': K.LATE_EXECUTION,
        'fenced': K.FENCED_EXECUTION,
        'unsubmitted': K.UNSUBMITTED_EXECUTION,
        'agent': K.WRONG_AGENT,
    }[how]
    if how == 'double':
        executions.append(dataclasses.replace(victim, seq=victim.seq + 1000))
    elif how == 'lie':
        lies = _LIES[result]
        lie = lies[pick % len(lies)]
        announcements = [dataclasses.replace(a, outcome=lie) if a.command_id == target else a for a in announcements]
    elif how == 'missing':
        announcements = [a for a in announcements if a.command_id != target]
    elif how == 'conflict':
        first = next(a for a in announcements if a.command_id == target)
        other = [o for o in Outcome if o != first.outcome][pick % 4]
        announcements.append(dataclasses.replace(first, outcome=other))
    elif how == 'late':
        executions = [
            dataclasses.replace(e, started_at=e.deadline + 0.5) if e.command_id == target else e for e in executions
        ]
    elif how == 'fenced':
        executions = [dataclasses.replace(e, fence_epoch=e.epoch + 1) if e is victim else e for e in executions]
    elif how == 'unsubmitted':
        submissions = [s for s in submissions if s.command_id != target]
    elif how == 'agent':
        announcements = [dataclasses.replace(a, agent_id='a9') if a.command_id == target else a for a in announcements]
    verdict = check_history(
        announcements=announcements, executions=executions, submissions=submissions, tolerance_sec=0.25
    )
    found = {(v.kind, v.command_id) for v in verdict.violations}
    assert (expected, target) in found, (how, target, verdict.render())
    assert {c for _, c in found} == {target}  # nothing else is blamed

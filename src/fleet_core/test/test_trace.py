"""fleet_core.trace: sampling policy, timeline ordering and rendering."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet_core.model import Priority
from fleet_core.trace import (
    Hop,
    TraceConfigError,
    TraceError,
    TraceRecord,
    TraceSampler,
    TraceSettings,
    build_timeline,
    head_sampled,
    parse_trace_settings,
    render_timeline,
    trace_hash_fraction,
)

T0 = 1_700_000_000.0


def rec(
    hop: Hop,
    t_ms: float,
    *,
    cid: str = 'c1',
    attempt: int = 0,
    status: str = '',
    node: str = 'orch',
    trace_id: str = 't1',
) -> TraceRecord:
    return TraceRecord(
        command_id=cid,
        trace_id=trace_id,
        agent_id='robot_001',
        shard_id='zone_1',
        node=node,
        hop=hop,
        stamp=T0 + t_ms / 1000.0,
        attempt=attempt,
        status=status,
    )


def happy_path(cid: str = 'c1', trace_id: str = 't1') -> list[TraceRecord]:
    return [
        rec(Hop.SUBMIT, 0, cid=cid, trace_id=trace_id),
        rec(Hop.ROUTE, 1, cid=cid, trace_id=trace_id),
        rec(Hop.DELIVER, 2, cid=cid, attempt=1, trace_id=trace_id),
        rec(Hop.RECEIVE, 3, cid=cid, attempt=1, node='agent', trace_id=trace_id),
        rec(Hop.ACK, 10, cid=cid, attempt=1, status='SUCCEEDED', trace_id=trace_id),
        rec(Hop.OUTCOME, 11, cid=cid, status='SUCCEEDED', trace_id=trace_id),
    ]


def retry_path(cid: str = 'c2', trace_id: str = 't2') -> list[TraceRecord]:
    return [
        rec(Hop.SUBMIT, 0, cid=cid, trace_id=trace_id),
        rec(Hop.ROUTE, 1, cid=cid, trace_id=trace_id),
        rec(Hop.DELIVER, 2, cid=cid, attempt=1, trace_id=trace_id),
        rec(Hop.RETRY, 500, cid=cid, attempt=2, trace_id=trace_id),
        rec(Hop.DELIVER, 501, cid=cid, attempt=2, trace_id=trace_id),
        rec(Hop.ACK, 520, cid=cid, attempt=2, status='SUCCEEDED', trace_id=trace_id),
        rec(Hop.OUTCOME, 521, cid=cid, status='SUCCEEDED', trace_id=trace_id),
    ]


# ------------------------------------------------------------------ timeline


def test_timeline_orders_hops_and_measures_latency() -> None:
    records = happy_path()
    shuffled = list(reversed(records))
    timeline = build_timeline(shuffled, 'c1')
    assert [s.record.hop for s in timeline.steps] == [r.hop for r in records]
    assert timeline.total_ms == pytest.approx(11.0, abs=1e-3)
    assert timeline.steps[4].since_previous_ms == pytest.approx(7.0, abs=1e-3)
    assert timeline.steps[4].since_start_ms == pytest.approx(10.0, abs=1e-3)
    assert timeline.outcome == 'SUCCEEDED'
    assert timeline.complete
    assert timeline.attempts == 1


def test_timeline_ignores_other_commands_and_duplicates() -> None:
    records = happy_path() + happy_path(cid='other') + happy_path()[:2]
    timeline = build_timeline(records, 'c1')
    assert len(timeline.steps) == 6
    assert timeline.duplicates_dropped == 2


def test_timeline_in_progress_has_no_outcome() -> None:
    timeline = build_timeline(happy_path()[:3], 'c1')
    assert not timeline.complete
    assert 'IN PROGRESS' in render_timeline(timeline)


def test_timeline_unknown_command_raises_actionable_error() -> None:
    with pytest.raises(TraceError, match="no trace events for command 'nope'"):
        build_timeline(happy_path(), 'nope')


def test_skewed_agent_clock_is_reordered_after_deliver() -> None:
    records = happy_path()
    # the agent's clock runs 5 ms behind: RECEIVE stamps before DELIVER
    records[3] = rec(Hop.RECEIVE, -3, attempt=1, node='agent')
    timeline = build_timeline(records, 'c1')
    hops = [s.record.hop for s in timeline.steps]
    assert hops == [Hop.SUBMIT, Hop.ROUTE, Hop.DELIVER, Hop.RECEIVE, Hop.ACK, Hop.OUTCOME]
    assert timeline.skew_corrections == 1
    assert timeline.steps[3].skewed
    assert '*' in render_timeline(timeline)


def test_skewed_agent_clock_keeps_the_agent_hops_in_causal_order() -> None:
    # the agent's clock runs 5 ms behind: its RECEIVE and START stamp before the DELIVER, its FINISH after it
    records = [
        *happy_path()[:3],
        rec(Hop.RECEIVE, -3, attempt=1, node='agent', status='ACCEPTED'),
        rec(Hop.START, -2, attempt=1, node='agent'),
        rec(Hop.FINISH, 4, attempt=1, node='agent', status='SUCCEEDED'),
        *happy_path()[4:],
    ]
    timeline = build_timeline(records, 'c1')
    assert [s.record.hop for s in timeline.steps] == [
        Hop.SUBMIT, Hop.ROUTE, Hop.DELIVER, Hop.RECEIVE, Hop.START, Hop.FINISH, Hop.ACK, Hop.OUTCOME
    ]  # fmt: skip
    assert timeline.skew_corrections == 2


def test_retry_timeline_counts_attempts_and_renders() -> None:
    timeline = build_timeline(retry_path(), 'c2')
    assert timeline.attempts == 2
    text = render_timeline(timeline)
    lines = text.splitlines()
    assert lines[0].startswith('command c2  trace t2  agent robot_001  shard zone_1')
    assert any(' RETRY ' in line for line in lines)
    assert lines[-1] == 'total 521.0 ms over 7 hops, 2 attempt(s): SUCCEEDED'


def test_expire_without_outcome_counts_as_decided() -> None:
    records = [*happy_path()[:3], rec(Hop.EXPIRE, 30_000, status='EXPIRED')]
    timeline = build_timeline(records, 'c1')
    assert timeline.outcome == 'EXPIRED'


@settings(max_examples=50, deadline=None)
@given(st.randoms())
def test_timeline_independent_of_input_order(rnd: random.Random) -> None:
    records = retry_path()
    expected = build_timeline(records, 'c2')
    shuffled = list(records)
    rnd.shuffle(shuffled)
    assert build_timeline(shuffled, 'c2') == expected


# ------------------------------------------------------------------ sampling


def test_hash_fraction_is_stable_and_uniform_enough() -> None:
    assert trace_hash_fraction('abc') == trace_hash_fraction('abc')
    values = [trace_hash_fraction(f'trace-{i}') for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    share = sum(v < 0.25 for v in values) / len(values)
    assert 0.2 < share < 0.3


def test_safety_is_always_sampled_and_disabled_never() -> None:
    none = TraceSettings(sample_fraction=0.0)
    assert head_sampled('x', Priority.SAFETY, none)
    assert not head_sampled('x', Priority.HIGH, none)
    assert head_sampled('x', Priority.LOW, TraceSettings(sample_fraction=1.0))
    assert not head_sampled('x', Priority.SAFETY, TraceSettings(enabled=False))


def emit_all(sampler: TraceSampler, records: list[TraceRecord], priority: Priority) -> list[TraceRecord]:
    out: list[TraceRecord] = []
    for i, record in enumerate(records):
        out.extend(sampler.offer(record, priority if i == 0 else None))
    return out


def test_unsampled_success_is_dropped_entirely() -> None:
    sampler = TraceSampler(TraceSettings(sample_fraction=0.0))
    assert emit_all(sampler, happy_path(), Priority.NORMAL) == []
    assert sampler.pending == 0
    assert sampler.dropped_commands == 1


def test_retry_releases_held_hops_in_order_and_keeps_the_rest() -> None:
    sampler = TraceSampler(TraceSettings(sample_fraction=0.0))
    records = retry_path()
    assert emit_all(sampler, records, Priority.NORMAL) == records
    assert sampler.pending == 0


def test_failed_outcome_releases_everything() -> None:
    sampler = TraceSampler(TraceSettings(sample_fraction=0.0))
    records = [*happy_path()[:4], rec(Hop.ACK, 9, attempt=1, status='FAILED'), rec(Hop.OUTCOME, 10, status='FAILED')]
    assert emit_all(sampler, records, Priority.LOW) == records


def agent_hops(status: str, cid: str = 'c1') -> list[TraceRecord]:
    return [
        rec(Hop.RECEIVE, 3, cid=cid, attempt=1, node='agent', status='ACCEPTED'),
        rec(Hop.START, 4, cid=cid, attempt=1, node='agent'),
        rec(Hop.FINISH, 9, cid=cid, attempt=1, node='agent', status=status),
    ]


def test_agent_finish_ends_its_command_like_an_outcome() -> None:
    # An agent never sees the OUTCOME: its FINISH drops an unsampled success (nothing held afterwards) ...
    sampler = TraceSampler(TraceSettings(sample_fraction=0.0))
    assert emit_all(sampler, agent_hops('SUCCEEDED'), Priority.NORMAL) == []
    assert sampler.pending == 0 and sampler.dropped_commands == 1
    # ... releases every held hop of a failure, and ends a sampled command's keep.
    failed = agent_hops('FAILED', cid='c2')
    assert emit_all(sampler, failed, Priority.NORMAL) == failed
    sampled = TraceSampler(TraceSettings(sample_fraction=1.0))
    assert emit_all(sampled, agent_hops('SUCCEEDED', cid='c3'), Priority.NORMAL) == agent_hops('SUCCEEDED', cid='c3')
    # The keep ended with the FINISH: a later stray hop of c3 is no longer passed through as kept.
    assert sampled.offer(rec(Hop.RECEIVE, 20, cid='c3', attempt=2, node='agent', status='ACCEPTED')) == ()


def test_timeline_places_agent_hops_between_deliver_and_ack() -> None:
    records = [*happy_path()[:4], *agent_hops('SUCCEEDED')[1:], *happy_path()[4:]]
    timeline = build_timeline(reversed(records), 'c1')
    assert [s.record.hop for s in timeline.steps] == [
        Hop.SUBMIT,
        Hop.ROUTE,
        Hop.DELIVER,
        Hop.RECEIVE,
        Hop.START,
        Hop.FINISH,
        Hop.ACK,
        Hop.OUTCOME,
    ]
    assert timeline.outcome == 'SUCCEEDED'
    text = render_timeline(timeline)
    assert 'START' in text and 'FINISH' in text


def test_safety_commands_are_kept_without_buffering() -> None:
    sampler = TraceSampler(TraceSettings(sample_fraction=0.0))
    records = happy_path()
    out = [sampler.offer(records[0], Priority.SAFETY)]
    out += [sampler.offer(r) for r in records[1:]]
    assert all(len(o) == 1 for o in out)


def test_pending_is_bounded() -> None:
    sampler = TraceSampler(TraceSettings(sample_fraction=0.0, pending_commands=3))
    for i in range(10):
        sampler.offer(rec(Hop.SUBMIT, i, cid=f'c{i}'), Priority.NORMAL)
    assert sampler.pending == 3
    assert sampler.dropped_commands == 7


def test_disabled_emits_nothing() -> None:
    sampler = TraceSampler(TraceSettings(enabled=False))
    assert emit_all(sampler, retry_path(), Priority.SAFETY) == []


@settings(max_examples=30, deadline=None)
@given(fraction=st.floats(min_value=0.0, max_value=1.0), n=st.integers(min_value=1, max_value=40))
def test_all_hops_of_a_command_kept_or_dropped_together(fraction: float, n: int) -> None:
    sampler = TraceSampler(TraceSettings(sample_fraction=fraction))
    emitted: list[TraceRecord] = []
    expected_kept: set[str] = set()
    for i in range(n):
        trace_id = f'trace-{i}'
        path = retry_path(cid=f'r{i}', trace_id=trace_id) if i % 3 == 0 else happy_path(cid=f'h{i}', trace_id=trace_id)
        if i % 3 == 0 or head_sampled(trace_id, Priority.NORMAL, sampler.settings):
            expected_kept.add(path[0].command_id)
        emitted.extend(emit_all(sampler, path, Priority.NORMAL))
    by_cmd: dict[str, int] = {}
    for record in emitted:
        by_cmd[record.command_id] = by_cmd.get(record.command_id, 0) + 1
    assert set(by_cmd) == expected_kept
    for cid, count in by_cmd.items():
        assert count == (7 if cid.startswith('r') else 6)


# ------------------------------------------------------------------ config


def test_parse_trace_settings() -> None:
    assert parse_trace_settings(None) == TraceSettings()
    parsed = parse_trace_settings({'sample_fraction': 1, 'pending_commands': 5, 'enabled': False})
    assert parsed == TraceSettings(enabled=False, sample_fraction=1.0, pending_commands=5)


@pytest.mark.parametrize(
    ('raw', 'message'),
    [
        ([], 'expected a mapping'),
        ({'fraction': 0.1}, 'unknown key'),
        ({'sample_fraction': 1.5}, 'sample_fraction must be within 0..1'),
        ({'sample_fraction': 'all'}, 'sample_fraction: expected a number'),
        ({'enabled': 'yes'}, 'enabled: expected true or false'),
        ({'pending_commands': -1}, 'pending_commands must be >= 0'),
    ],
)
def test_parse_trace_settings_errors_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(TraceConfigError, match=message):
        parse_trace_settings(raw, 'fleet.yaml: tracing')

"""ShardBackpressure: the level follows queue depth and first-ack latency (not execution time); LOW is shed at
level 2 by the dispatcher while SAFETY and NORMAL still flow."""

from __future__ import annotations

from fleet_core.config import DispatchSettings, IntakeSettings
from fleet_core.degradation import DegradationConfig
from fleet_core.dispatcher import CommandDispatcher
from fleet_core.model import Outcome, Priority
from fleet_core.shard_backpressure import ShardBackpressure

CONFIG = DegradationConfig(
    level1_queue_depth=4, level2_queue_depth=8, level1_ack_p99_ms=100.0, level2_ack_p99_ms=400.0, hold_sec=1.0
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def dispatcher(clock: Clock) -> CommandDispatcher:
    return CommandDispatcher(
        site_id='s', shard_id='z', agents=['a', 'b'], epoch=1, settings=DispatchSettings(), clock=clock
    )


def test_slow_first_acks_raise_the_level_but_long_executions_do_not() -> None:
    clock = Clock()
    bp = ShardBackpressure(CONFIG, clock=clock, intake=IntakeSettings(accept_ack_delay_sec=0.2))
    d = dispatcher(clock)
    for i in range(20):
        bp.on_send(f'c{i}', 1)
        clock.now += 0.01  # answered quickly ...
        bp.on_ack(f'c{i}', 1)
        clock.now += 30.0  # ... even though it then ran for 30 s
    assert bp.update(d.stats()) == 0
    for i in range(20):
        bp.on_send(f'slow{i}', 1)
        clock.now += 0.5
        bp.on_ack(f'slow{i}', 1)
    assert bp.first_ack_p99_ms >= 400.0
    assert bp.update(d.stats()) == 2


def test_the_deliberate_accepted_delay_is_not_counted_as_slowness() -> None:
    clock = Clock()
    bp = ShardBackpressure(CONFIG, clock=clock, intake=IntakeSettings(accept_ack_delay_sec=0.2))
    for i in range(20):
        bp.on_send(f'long{i}', 1)
        clock.now += 0.23  # a long command: ACCEPTED held back 0.2 s by the agent, then 30 ms of transit
        bp.on_ack(f'long{i}', 1, accepted=True)
    assert 25.0 <= bp.first_ack_p99_ms <= 35.0


def test_queue_depth_raises_the_level_and_level_two_sheds_only_low() -> None:
    clock = Clock()
    bp = ShardBackpressure(CONFIG, clock=clock, intake=IntakeSettings(accept_ack_delay_sec=0.2))
    d = dispatcher(clock)
    for _ in range(6):
        d.submit(['a'], 'noop', '{}', Priority.NORMAL, 30.0)
    assert bp.update(d.stats()) == 1  # 5 queued behind the one in flight
    for _ in range(4):
        d.submit(['b'], 'noop', '{}', Priority.NORMAL, 30.0)
    level = bp.update(d.stats())
    assert level == 2
    d.degradation_level = level
    d.take()
    low = d.submit(['a'], 'noop', '{}', Priority.LOW, 30.0)
    safety = d.submit(['a'], 'stop', '{}', Priority.SAFETY, 30.0)
    normal = d.submit(['b'], 'noop', '{}', Priority.NORMAL, 30.0)
    out = d.take()
    shed = {r.command_id for r in out.results if r.outcome is Outcome.REJECTED}
    assert shed == {low[0].command_id}
    assert safety[0].command_id in {c.command_id for c in out.sends}  # SAFETY bypasses the queue at once
    assert normal[0].command_id in {c.command_id for c in d.pending()}


def test_unanswered_deliveries_are_bounded_and_reset_on_takeover() -> None:
    clock = Clock()
    bp = ShardBackpressure(CONFIG, clock=clock, intake=IntakeSettings(accept_ack_delay_sec=0.2))
    for i in range(60_000):
        bp.on_send(f'c{i}', 1)
    assert len(bp._sent) <= 50_000
    bp.reset()
    bp.on_ack('c59999', 1)
    assert bp.first_ack_p99_ms == 0.0

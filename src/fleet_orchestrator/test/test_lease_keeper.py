"""LeaseKeeper: renews a busy leader's lease from its own thread, measures the executor's stalls, and leaves a hung
executor's lease to lapse."""

from __future__ import annotations

import threading

from fleet_core.leadership import Lease, LeaseConfig, LeaseState
from fleet_orchestrator.lease_keeper import STALL_LOG_SEC, LeaseKeeper
from harness.wait import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, sec: float) -> None:
        with self._lock:
            self.now += sec


def test_the_keeper_renews_while_the_executor_is_busy_and_logs_the_stall():
    clock = Clock()
    config = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, stall_limit_sec=3.0)
    lease = LeaseState(site_id='s', shard_id='z', node_id='a', config=config, clock=clock)
    published: list[Lease] = []
    logs: list[str] = []
    keeper = LeaseKeeper(lease, published.append, period=0.005, log=logs.append)
    keeper.start()
    try:
        lease.take_over()
        for _ in range(8):  # the executor is held for 2 s: the keeper renews every renew period
            clock.advance(0.25)
            wait_for(lambda: published and published[-1].stamp == clock(), 10, what='a renewal by the keeper')
        assert lease.is_leader() and lease.kept_alive >= 7
        wait_for(lambda: any('kept by the keeper' in line for line in logs), 10, what='the lease-kept log')
        lease.should_renew()  # the executor is back: its stall ends and is measured
        wait_for(lambda: keeper.stalls, 10, what='the stall to be measured')
        assert keeper.stalls[0] >= 2.0 > STALL_LOG_SEC
        assert any('executor stalled 2.00s' in line for line in logs)
        # A hung executor: past stall_limit_sec the keeper stops and the lease lapses.
        count = len(published)
        for _ in range(20):
            clock.advance(0.25)
        wait_for(lambda: lease.executor_stall() > config.stall_limit_sec, 10, what='the stall limit')
        assert not lease.is_leader()
        assert all(p.stamp <= lease.current.stamp for p in published) and len(published) <= count + 12
    finally:
        keeper.stop()


def test_the_keeper_renews_at_each_poll_not_once_a_renew_period():
    clock = Clock()
    config = LeaseConfig(lease_sec=1.0, renew_period_sec=0.25, stall_limit_sec=3.0)
    lease = LeaseState(site_id='s', shard_id='z', node_id='a', config=config, clock=clock)
    published: list[Lease] = []
    keeper = LeaseKeeper(lease, published.append, period=0.005)
    keeper.start()
    try:
        lease.take_over()
        for _ in range(3):  # well within a renew period each time: renewed anyway, a lease ahead
            clock.advance(0.05)
            wait_for(lambda: published and published[-1].stamp == clock(), 10, what='a renewal ahead of the period')
        assert lease.kept_alive == 0  # the executor is not stalled past a renew period: nothing to count
    finally:
        keeper.stop()

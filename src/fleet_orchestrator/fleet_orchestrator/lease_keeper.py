"""Lease renewal beside the executor thread. No ROS here: the node passes its publish function.

A leader renews from its tick and its busiest callbacks, all on the one executor thread. Under load that thread can
be held for longer than the lease by one callback (the mission's first steps for every robot, a takeover adopting a
busy shard's work, a burst of outcomes feeding the mission) or by a backlog on a CPU-starved host, and the timer
that would renew is queued behind it: the leader's lease lapsed with no fault (issue: "leases lapse under load").
The keeper thread renews between the executor's own renewals, as long as the executor is busy rather than hung
(LeaseState.keep_alive: it polled within leadership.stall_limit_sec). It never steps down or decides anything: a
lapse, a fencing and every effect of leadership stay on the executor thread.

It renews at each of its polls (every renew_period_sec / 4), not once a renew period: on a CPU-starved host the
kernel deschedules the whole process, keeper included, for up to a second (measured: both threads waiting on the
run queue, or the keeper waiting for the GIL held by the descheduled executor thread), and a stall lapses the lease
only when it outlasts what is left of it when the stall starts: at least lease_sec - renew_period_sec / 2 this way
(0.875 s of the default 1 s lease), lease_sec - renew_period_sec * 5 / 4 (0.69 s) when renewing once a renew period.
The price is up to four lease messages per renew period instead of one."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fleet_core.leadership import Lease, LeaseState

STALL_LOG_SEC = 0.5
"""An executor stall of a leader at least this long is logged when it ends (the measurements behind stall_limit_sec)."""


class LeaseKeeper:
    """Polls `lease.keep_alive()` every `period` seconds on a daemon thread and publishes what it returns."""

    def __init__(
        self,
        lease: LeaseState,
        publish: Callable[[Lease], None],
        *,
        period: float | None = None,
        on_error: Callable[[Exception], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.lease = lease
        self._publish = publish
        self._period = period if period is not None else lease.config.renew_period_sec / 4
        self._on_error = on_error
        self._log = log
        self._logged_stall = False
        self._peak = 0.0
        self.stalls: list[float] = []
        """Executor stalls of at least STALL_LOG_SEC seen while leading, in seconds (as the keeper measured them)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name='lease-keeper', daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop and join (before the publisher it uses is destroyed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._watch()
            lease = self.lease.keep_alive(every=self._period)
            if lease is None:
                continue
            try:
                self._publish(lease)
            except Exception as exc:  # noqa: BLE001 - the publisher may be gone at shutdown; never kill the thread silently
                if self._on_error is not None:
                    self._on_error(exc)
                continue
            self._report(lease)

    def _watch(self) -> None:
        """Measure executor stalls while leading: a stall ends when the executor polls again."""
        stall = self.lease.executor_stall() if self.lease.leading else 0.0
        if stall >= self._peak:
            self._peak = stall
            return
        peak, self._peak = self._peak, stall
        if peak >= STALL_LOG_SEC:
            self.stalls.append(peak)
            if self._log is not None:
                self._log(
                    f'executor stalled {peak:.2f}s while leading (lease {self.lease.config.lease_sec:g}s, '
                    f'longest so far {max(self.stalls):.2f}s, {self.lease.kept_alive} renewal(s) by the keeper)'
                )

    def _report(self, lease: Lease) -> None:
        """Log once per stall that outlasted the lease (what the lease would have lost without the keeper)."""
        stall = self.lease.executor_stall()
        if stall < self.lease.config.lease_sec:
            self._logged_stall = False
            return
        if not self._logged_stall and self._log is not None:
            self._logged_stall = True
            self._log(
                f'executor busy for {stall:.2f}s (lease {self.lease.config.lease_sec:g}s): lease of epoch '
                f'{lease.epoch} kept by the keeper thread (up to {self.lease.config.stall_limit_sec:g}s)'
            )

"""The shard's degradation level from its queues and from how fast agents answer a delivery.

The DegradationPolicy is fed the queued commands per priority and the p99 of the *first* ack of each delivery
(RECEIVED/ACCEPTED or a quick final ack): that is the link and intake responsiveness the level is about. The final
ack latency in ShardStatus includes execution time (a 30 s inspection is not overload), so it is not used here."""

from __future__ import annotations

from collections.abc import Callable

from fleet_core.config import IntakeSettings
from fleet_core.degradation import DegradationConfig, DegradationPolicy
from fleet_core.dispatcher import DispatchStats
from fleet_core.model import Priority
from fleet_core.stats import LatencyWindow

MAX_TRACKED = 50_000
"""Deliveries awaiting their first ack that are remembered (the oldest are forgotten beyond this)."""


class ShardBackpressure:
    def __init__(self, config: DegradationConfig, *, clock: Callable[[], float], intake: IntakeSettings) -> None:
        self.policy = DegradationPolicy(config, clock=clock)
        self._intake = intake
        self._clock = clock
        self._sent: dict[tuple[str, int], float] = {}
        self._first_ack = LatencyWindow(1024)

    def on_send(self, command_id: str, attempt: int) -> None:
        if len(self._sent) >= MAX_TRACKED:
            self._sent.pop(next(iter(self._sent)))
        self._sent[(command_id, attempt)] = self._clock()

    def on_ack(self, command_id: str, attempt: int, *, accepted: bool = False) -> None:
        """`accepted`: an ACCEPTED ack, which agents hold back on purpose (intake.accept_ack_delay_sec) and which
        is not slowness."""
        sent = self._sent.pop((command_id, attempt), None)
        if sent is not None:
            self._first_ack.add(self._intake.answer_delay(self._clock() - sent, accepted=accepted) * 1000.0)

    @property
    def first_ack_p99_ms(self) -> float:
        return self._first_ack.percentile(99)

    def update(self, stats: DispatchStats) -> int:
        """Re-evaluate and return the level (0, 1 or 2)."""
        depth = {priority: stats.queue_depth[int(priority)] for priority in Priority}
        return self.policy.update(depth, self.first_ack_p99_ms)

    def reset(self) -> None:
        """A new leadership starts with no deliveries outstanding."""
        self._sent.clear()

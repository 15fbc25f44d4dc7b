"""Bounded windows of recent samples with percentiles (ack latency and the like)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class LatencyWindow:
    """The last `size` samples; percentiles by nearest rank over that window."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def __len__(self) -> int:
        return len(self._samples)

    def percentile(self, q: float) -> float:
        """q in [0, 100]; 0.0 when empty."""
        return percentile(self._samples, q)


def percentile(values: Iterable[float], q: float, empty: float = 0.0) -> float:
    """Nearest-rank percentile, q in [0, 100]; `empty` when there are no values. The one percentile of the
    project: dispatcher stats, the simulator's summary and the benchmarks all use it."""
    ordered = sorted(values)
    if not ordered:
        return empty
    return ordered[max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))]


class RetryTimeout:
    """A retransmission timeout learnt from the time to an agent's first ack (smoothed mean + 4 x mean deviation,
    as TCP does), clamped to [floor, ceiling]. Only first deliveries are sampled: the ack of a re-sent command
    cannot tell which delivery it answers. Under load the timeout grows, so retries back off instead of piling
    duplicates onto busy agents; `floor` until the first sample."""

    def __init__(self, floor: float, ceiling: float) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling)
        self._srtt: float | None = None
        self._rttvar = 0.0

    def sample(self, seconds: float) -> None:
        if seconds < 0.0:
            return
        if self._srtt is None:
            self._srtt, self._rttvar = seconds, seconds / 2.0
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - seconds)
            self._srtt = 0.875 * self._srtt + 0.125 * seconds

    @property
    def value(self) -> float:
        if self._srtt is None:
            return self.floor
        return min(self.ceiling, max(self.floor, self._srtt + 4.0 * self._rttvar))

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

"""Bounded windows of recent samples with percentiles (ack latency and the like)."""

from __future__ import annotations

from collections import deque


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
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        rank = max(0, min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1))))
        return ordered[rank]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a list (0.0 when empty)."""
    window = LatencyWindow(max(1, len(values)))
    for v in values:
        window.add(v)
    return window.percentile(q)

"""Shard degradation policy: queue depth and ack-latency p99 set a level (0 normal, 1 telemetry reduced,
2 telemetry minimal + LOW shed) with hysteresis; SAFETY and command traffic other than LOW are never shed."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fleet_core.model import Priority

MAX_LEVEL = 2


class DegradationConfigError(ValueError):
    """A degradation setting that cannot work; the message names the key."""


@dataclass(frozen=True, slots=True)
class DegradationConfig:
    """`degradation:` block of the fleet config. A level is entered when either signal reaches its threshold and
    left only after both stay below `recover_ratio` x that threshold for `hold_sec` (no flapping)."""

    level1_queue_depth: int = 500
    level2_queue_depth: int = 2000
    level1_ack_p99_ms: float = 250.0
    level2_ack_p99_ms: float = 1000.0
    recover_ratio: float = 0.7
    hold_sec: float = 2.0
    telemetry_factor: tuple[float, float, float] = (1.0, 0.25, 0.05)

    def __post_init__(self) -> None:
        if not (0 < self.level1_queue_depth < self.level2_queue_depth):
            raise DegradationConfigError('degradation.level1_queue_depth must be > 0 and < level2_queue_depth')
        if not (0 < self.level1_ack_p99_ms < self.level2_ack_p99_ms and math.isfinite(self.level2_ack_p99_ms)):
            raise DegradationConfigError('degradation.level1_ack_p99_ms must be > 0 and < level2_ack_p99_ms')
        if not (0 < self.recover_ratio < 1):
            raise DegradationConfigError('degradation.recover_ratio must be between 0 and 1 (exclusive)')
        if not (math.isfinite(self.hold_sec) and self.hold_sec >= 0):
            raise DegradationConfigError('degradation.hold_sec must be >= 0')
        factors = self.telemetry_factor
        if (
            len(factors) != MAX_LEVEL + 1
            or not all(0 < f <= 1 for f in factors)
            or list(factors) != sorted(factors, reverse=True)
        ):
            raise DegradationConfigError(
                'degradation.telemetry_factor must be three rates in (0, 1], not increasing with the level'
            )


def telemetry_rate_factor(level: int, config: DegradationConfig) -> float:
    """Multiplier agents apply to their nominal telemetry rate at `level` (clamped to 0..2)."""
    return config.telemetry_factor[min(max(level, 0), MAX_LEVEL)]


def may_shed(priority: Priority, level: int) -> bool:
    """Only LOW traffic, and only at level 2, may be shed: SAFETY and command traffic always flow."""
    return priority is Priority.LOW and level >= MAX_LEVEL


class DegradationPolicy:
    """Feed it `update(queue_depth, ack_p99_ms)` periodically; read `level`."""

    def __init__(self, config: DegradationConfig, *, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._level = 0
        self._calm_since: float | None = None

    @property
    def level(self) -> int:
        return self._level

    def _pressure_level(self, depth: int, p99: float, scale: float) -> int:
        c = self.config
        if depth >= c.level2_queue_depth * scale or p99 >= c.level2_ack_p99_ms * scale:
            return 2
        if depth >= c.level1_queue_depth * scale or p99 >= c.level1_ack_p99_ms * scale:
            return 1
        return 0

    def update(self, queue_depth: Mapping[Priority, int], ack_p99_ms: float) -> int:
        """Re-evaluate with queued commands per priority and the recent final-ack p99 (NaN when no acks).
        SAFETY never waits in a queue, so only the other priorities count."""
        depth = sum(count for priority, count in queue_depth.items() if priority is not Priority.SAFETY)
        p99 = ack_p99_ms if math.isfinite(ack_p99_ms) else 0.0
        now = self._clock()
        rising = self._pressure_level(depth, p99, 1.0)
        if rising > self._level:
            self._level = rising
            self._calm_since = None
            return self._level
        # Step down one level at a time once the load stayed clearly below the current level's entry threshold.
        if self._level > 0 and self._pressure_level(depth, p99, self.config.recover_ratio) < self._level:
            if self._calm_since is None:
                self._calm_since = now
            if now - self._calm_since >= self.config.hold_sec:
                self._level -= 1
                self._calm_since = now if self._level > 0 else None
        else:
            self._calm_since = None
        return self._level

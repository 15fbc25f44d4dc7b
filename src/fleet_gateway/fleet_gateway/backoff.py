"""Jittered exponential backoff for reconnecting clients (full jitter: a uniform draw below the capped delay)."""

from __future__ import annotations

import random


class Backoff:
    """`next_delay()` grows as initial * factor**n up to `maximum`, drawn uniformly in [delay/2, delay];
    `reset()` after a connection that worked. Pure and seedable for tests."""

    def __init__(
        self, *, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError(
                f'backoff needs 0 < initial <= maximum and factor >= 1 (got {initial}, {maximum}, {factor})'
            )
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self, hint: float | None = None) -> float:
        """The next wait; a server's Retry-After `hint` raises the floor."""
        cap = min(self.maximum, self.initial * self.factor**self.attempts)
        self.attempts += 1
        delay = self._rng.uniform(cap / 2, cap)
        return max(delay, hint or 0.0)

    def reset(self) -> None:
        self.attempts = 0

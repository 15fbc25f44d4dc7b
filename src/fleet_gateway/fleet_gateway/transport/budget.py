"""The per-event-loop-turn budget for incoming work."""

from __future__ import annotations

import asyncio
import time


class IngestBudget:
    """Time spent on incoming messages in the current event-loop turn; `over()` once it exceeds `budget_s`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget_s: float) -> None:
        self.loop = loop
        self.budget_s = budget_s
        self.turn_start: float | None = None

    def begin(self) -> None:
        """Called with the turn's first incoming message (when `turn_start` is None)."""
        self.turn_start = time.perf_counter()
        self.loop.call_soon(self._next_turn)  # runs first thing in the next turn, before its reads

    def over(self, extra_s: float = 0.0) -> bool:
        start = self.turn_start
        return start is not None and time.perf_counter() - start > self.budget_s + extra_s

    def _next_turn(self) -> None:
        self.turn_start = None

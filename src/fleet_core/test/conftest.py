"""Fixtures for the pure core tests: a controllable clock."""

from __future__ import annotations

import pytest


class FakeClock:
    """Wall-clock stand-in (UTC seconds) that only moves when told."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

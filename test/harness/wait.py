"""Condition polling with a deadline: the only way tests wait for something to happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar('T')


class WaitTimeout(AssertionError):
    """A condition did not become true before its deadline."""


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.005,
    what: str = 'condition',
    tick: Callable[[], object] | None = None,
) -> T:
    """Return the first truthy value of `condition()`, polling until `timeout` seconds have passed.

    `tick`, when given, is called between polls (e.g. to spin an executor once) instead of sleeping.
    Raises WaitTimeout naming `what` when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f'timed out after {timeout:.1f}s waiting for {what}')
        if tick is not None:
            tick()
        else:
            time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], T], timeout: float, *, interval: float = 0.001, what: str = 'condition'
) -> T:
    """`wait_for` inside a running asyncio loop: polls between short `asyncio.sleep`s, so the loop's own tasks (the
    code under test) run while the test waits. Raises WaitTimeout naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f'timed out after {timeout:.1f}s waiting for {what}')
        await asyncio.sleep(interval)

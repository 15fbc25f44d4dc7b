"""Awaiting rclpy from the gateway's asyncio thread while rclpy spins in another: a future's outcome handed over
with `call_soon_threadsafe`, and readiness of a server awaited without blocking the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger('fleet_gateway.ros')

READY_POLL_S = 0.02
"""How often `wait_until` looks again: rclpy offers no event for a server appearing in the graph."""


def asyncio_future(loop: asyncio.AbstractEventLoop, ros_future: Any) -> asyncio.Future[Any]:
    """An asyncio future of `loop` that settles like the rclpy `ros_future` (done in the spin thread)."""
    result: asyncio.Future[Any] = loop.create_future()

    def done(finished: Any) -> None:  # spin thread, or this one if it is done already
        try:
            loop.call_soon_threadsafe(_settle, result, finished)
        except RuntimeError:  # the loop closed during shutdown: nobody awaits this any more
            log.debug('dropping an rclpy future outcome: the event loop is closed')

    ros_future.add_done_callback(done)
    return result


def _settle(result: asyncio.Future[Any], ros_future: Any) -> None:
    if result.done():  # the awaiting side gave up (timeout, cancelled)
        return
    exc = ros_future.exception()
    if exc is not None:
        result.set_exception(exc)
    else:
        result.set_result(ros_future.result())


async def wait_until(ready: Callable[[], bool], timeout_s: float) -> bool:
    """True as soon as `ready()` is, False after `timeout_s` without it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not ready():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(READY_POLL_S)
    return True

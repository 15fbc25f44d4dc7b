"""Running rclpy nodes beside an asyncio loop that owns the main thread (rclpy spins in a SpinThread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from fleet_ros.spin import SpinThread

SHUTDOWN_POLL_SEC = 0.1


async def until_shutdown(context: Context) -> None:
    """Return once the ROS context shuts down (SIGINT through rclpy's handler, or rclpy.shutdown())."""
    # Polled, not awaited on an Event: context.ok() is the one shutdown signal every path sets (rclpy.shutdown,
    # rclpy's own SIGINT handler), and it is set from threads that do not own this loop.
    while context.ok():  # noqa: ASYNC110 - see above
        await asyncio.sleep(SHUTDOWN_POLL_SEC)


def run_nodes(
    context: Context,
    nodes: list[Node],
    main: Callable[[], Awaitable[None]],
    *,
    cleanup: Callable[[], Awaitable[None]] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Spin `nodes` in a SpinThread and run `main()` on a fresh asyncio loop in this thread until it returns
    or the context shuts down; then `cleanup()`, stop spinning and destroy the nodes."""
    executor = EventsExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    spin = SpinThread(executor).start()
    loop = loop or asyncio.new_event_loop()
    try:
        loop.run_until_complete(_first_of(main(), until_shutdown(context)))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if cleanup is not None:
            loop.run_until_complete(cleanup())
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        spin.stop()
        for node in nodes:
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        loop.close()


async def _first_of(*awaitables: Awaitable[None]) -> None:
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()

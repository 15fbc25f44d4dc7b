"""A short-lived rclpy session for command-line tools: own Context, one node, an EventsExecutor spun on the
calling thread in slices until a deadline or a condition (no background spin thread is needed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

SLICE_SEC = 0.05


class RosSession:
    def __init__(self, node: Node, executor: Executor) -> None:
        self.node = node
        self.executor = executor

    def spin_until(self, deadline_monotonic: float | None, done: Callable[[], bool] = lambda: False) -> bool:
        """Spin until `done()` (returns True), the deadline (False), or Ctrl-C / shutdown (False)."""
        try:
            while self.executor.context.ok():
                if done():
                    return True
                if deadline_monotonic is not None and time.monotonic() >= deadline_monotonic:
                    return False
                self.executor.spin_once(timeout_sec=SLICE_SEC)
        except (KeyboardInterrupt, ExternalShutdownException):
            return False
        return False


@contextmanager
def ros_session(node_name: str) -> Iterator[RosSession]:
    context = Context()
    rclpy.init(context=context)
    executor = EventsExecutor(context=context)
    node = Node(node_name, context=context)
    executor.add_node(node)
    try:
        yield RosSession(node, executor)
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        if context.ok():
            rclpy.shutdown(context=context)

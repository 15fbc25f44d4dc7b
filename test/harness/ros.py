"""In-process ROS for tests: a private Context and an EventsExecutor, spun from the waiting thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.context import Context
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from harness.wait import wait_for

T = TypeVar('T')


class RosHarness:
    """Owns one Context and executor. Nodes added here are destroyed by `close()`."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = EventsExecutor(context=self.context)
        self.nodes: list[Node] = []

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str, **kwargs: object) -> Node:
        return self.add(Node(name, context=self.context, **kwargs))  # type: ignore[arg-type]  # passed through to rclpy's Node

    def spin_once(self, timeout: float = 0.01) -> None:
        self.executor.spin_once(timeout_sec=timeout)

    def spin_until(self, condition: Callable[[], T], timeout: float, what: str = 'condition') -> T:
        return wait_for(condition, timeout, what=what, tick=lambda: self.spin_once(0.01))

    def close(self) -> None:
        for node in reversed(self.nodes):
            self.executor.remove_node(node)
            node.destroy_node()
        self.executor.shutdown()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

"""A short-lived rclpy session for command-line tools: one node on a fleet_ros.runtime program, spun on the calling
thread in slices until a deadline, a condition, or SIGINT/SIGTERM (no background spin thread is needed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rclpy.node import Node

from fleet_ros.runtime import RosProgram, ros_program

SLICE_SEC = 0.05


class RosSession:
    def __init__(self, node: Node, program: RosProgram) -> None:
        self.node = node
        self.program = program

    def spin_until(self, deadline_monotonic: float | None, done: Callable[[], bool] = lambda: False) -> bool:
        """Spin until `done()` (returns True), the deadline (False), or SIGINT/SIGTERM (False)."""
        while self.program.running:
            if done():
                return True
            if deadline_monotonic is not None and time.monotonic() >= deadline_monotonic:
                return False
            self.program.spin_once(SLICE_SEC)
        return False

    def drain(self, seconds: float) -> None:
        """Spin for `seconds` even after a stop request: callbacks take what already reached the node's readers
        (a recorder stopped right after a message arrived still writes it)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.program.spin_once(min(SLICE_SEC, left))


@contextmanager
def ros_session(node_name: str) -> Iterator[RosSession]:
    with ros_program(node_name) as program:
        yield RosSession(program.add_node(Node(node_name, context=program.context)), program)

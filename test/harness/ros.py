"""In-process ROS for tests: a private Context and an EventsExecutor, spun from the waiting thread."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import rclpy
from rclpy.context import Context
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from fleet_ros.runtime import shut_down_in_order
from harness.wait import WaitTimeout, wait_for

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

    def call(self, send: Callable[[], Any], timeout: float, what: str, *, attempt_sec: float = 5.0) -> Any:
        """The result of the first of the futures `send()` returns (a service request sent) to complete, sending
        again every `attempt_sec` without one until `timeout` (a late reply to an earlier send counts too). A request
        or its reply can be lost right after a service appears on a busy host (Fast DDS drops a reply whose reader
        the server has not matched yet: rclpy warns "failed to send response (timeout)"), so a caller that waits for
        one reply may wait forever. Only for requests that are safe to repeat: a read, a state to set, or a
        submission with a request_id (the shard answers a repeat with the first answer)."""
        deadline = time.monotonic() + timeout
        sent: list[Any] = []
        while True:
            sent.append(send())
            wait = max(min(attempt_sec, deadline - time.monotonic()), 0.0)
            try:
                done = self.spin_until(lambda: next((f for f in sent if f.done()), None), wait, what)
            except WaitTimeout:
                if time.monotonic() < deadline:
                    continue
                raise WaitTimeout(f'timed out after {timeout:.1f}s waiting for {what} ({len(sent)} sends)') from None
            return done.result()

    def submit(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        """The answer of a SubmitCommand `client` to `request`, through `call`. The request is given a request_id
        when it has none, so that a repeat is answered with the first answer's commands, never with new ones."""
        if not request.request_id:
            request.request_id = str(uuid.uuid4())
        return self.call(lambda: client.call_async(request), timeout, f'the answer of {client.srv_name}')

    def close(self) -> None:
        shut_down_in_order(self.nodes, self.executor, self.context)  # the programs' order, action handles included

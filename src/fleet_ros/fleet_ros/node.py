"""Base classes for fleetlanes nodes: rclpy's `Node` and `LifecycleNode` with the signatures Jazzy leaves unannotated.

rclpy (Jazzy) ships `py.typed` but `get_logger`, `destroy_node` and the lifecycle `trigger_*` methods have no
annotations, so under `mypy --strict` every call through a subclass is a `no-untyped-call`
(`untyped_calls_exclude = ["rclpy"]` matches a call by the subclass's name, e.g. `fleet_agent.node.AgentHostNode
.get_logger`, not by the class that defines it). The declarations below exist for the type checker only: at run time
these classes add nothing to rclpy's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node

if TYPE_CHECKING:
    from rclpy.impl.rcutils_logger import RcutilsLogger


class TypedNode(Node):
    """`rclpy.node.Node` whose logger and teardown are typed; fleetlanes nodes subclass this."""

    if TYPE_CHECKING:

        def get_logger(self) -> RcutilsLogger: ...

        def destroy_node(self) -> None: ...


class TypedLifecycleNode(LifecycleNode):
    """`rclpy.lifecycle.LifecycleNode` whose logger, teardown and transitions are typed."""

    if TYPE_CHECKING:

        def get_logger(self) -> RcutilsLogger: ...

        def destroy_node(self) -> None: ...

        def trigger_configure(self) -> TransitionCallbackReturn: ...

        def trigger_activate(self) -> TransitionCallbackReturn: ...

        def trigger_deactivate(self) -> TransitionCallbackReturn: ...

        def trigger_cleanup(self) -> TransitionCallbackReturn: ...

        def trigger_shutdown(self) -> TransitionCallbackReturn: ...

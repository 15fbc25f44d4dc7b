"""Driving a lifecycle node through its standard services (configure, activate), as a lifecycle manager does."""

from __future__ import annotations

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.client import Client
from rclpy.node import Node
from rclpy.task import Future


class LifecycleClient:
    """Asynchronous transitions of the node `fqn` (e.g. /site_a/zone_1/standby); the caller spins."""

    def __init__(self, node: Node, fqn: str) -> None:
        self.fqn = fqn
        self.change_state: Client = node.create_client(ChangeState, f'{fqn}/change_state')

    def ready(self) -> bool:
        return self.change_state.service_is_ready()

    def request(self, transition: int) -> Future:
        return self.change_state.call_async(ChangeState.Request(transition=Transition(id=transition)))

    def configure(self) -> Future:
        return self.request(Transition.TRANSITION_CONFIGURE)

    def activate(self) -> Future:
        return self.request(Transition.TRANSITION_ACTIVATE)

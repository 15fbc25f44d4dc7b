"""The ROS side of one gateway: one node's topics, service clients, served services, action goals and served
actions, each in its own module; `ros.dispatch` applies the sessions' events to them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from rclpy.node import Node

from fleet_gateway.acl import AccessPolicy
from fleet_gateway.config import GatewayConfig
from fleet_gateway.ros import graph
from fleet_gateway.ros.action_goals import ActionGoalRunner
from fleet_gateway.ros.served_actions import ClientServedActions
from fleet_gateway.ros.served_services import ClientServedServices
from fleet_gateway.ros.service_clients import ServiceClients
from fleet_gateway.ros.topics import OnMessages, RosTopics
from fleet_gateway.transport.shared import ServedNames

EndpointsFactory = Callable[[asyncio.AbstractEventLoop, OnMessages], 'RosEndpoints']
"""Builds the ROS side of a gateway on its event loop (a stand-in in tests)."""


class RosEndpoints:
    """Owned by the asyncio thread; rclpy callbacks only hand over with `call_soon_threadsafe`."""

    def __init__(
        self,
        node: Node,
        loop: asyncio.AbstractEventLoop,
        config: GatewayConfig,
        policy: AccessPolicy,
        on_messages: OnMessages,
    ) -> None:
        self.node = node
        self.topics = RosTopics(node, loop, config, policy, on_messages)
        self.calls = ServiceClients(node, loop, server_wait_s=config.call_service_wait_s)
        self.services = ClientServedServices(node, loop)
        self.goals = ActionGoalRunner(node, loop)
        self.actions = ClientServedActions(node, loop)

    def share_served_names(self, names: ServedNames, worker: int | None) -> None:
        """Services and actions served for clients are unique in `names` too (a cluster's workers share it; this
        gateway is worker `worker` of its cluster, None alone)."""
        ours = graph.cluster_nodes(self.node, worker)
        self.services.share_names(names, ours)
        self.actions.share_names(names, ours)

    def topic_type(self, topic: str) -> str | None:
        return graph.topic_type(self.node, topic)

    def service_type(self, service: str) -> str | None:
        return graph.service_type(self.node, service)

    def stats(self) -> dict[str, Any]:
        return {
            'ros_messages_received': self.topics.received,
            'served_calls': dict(self.services.counters),
            'action_goals': dict(self.goals.counters),
            'served_goals': dict(self.actions.counters),
        }

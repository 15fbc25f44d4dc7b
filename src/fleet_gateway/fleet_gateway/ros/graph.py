"""What the gateway asks the ROS graph: the types of topics and services, and conflicts with what exists."""

from __future__ import annotations

import re
from collections.abc import Callable

from rclpy.node import Node

from fleet_gateway.conversion import type_name


class EndpointConflict(ValueError):
    """A topic is already bridged with another message type, or a service or action is served by someone else."""


def check_type(node: Node, topic: str, msg_cls: type) -> None:
    """Raises EndpointConflict when `topic` exists in ROS with another type than `msg_cls`."""
    wanted = type_name(msg_cls)
    for name, types in node.get_topic_names_and_types():
        if name == topic and types and wanted not in types:
            raise EndpointConflict(f'{topic} exists in ROS with type {types[0]}, not {wanted}')


def topic_type(node: Node, topic: str) -> str | None:
    for name, types in node.get_topic_names_and_types():
        if name == topic and types:
            return str(types[0])
    return None


def service_type(node: Node, service: str) -> str | None:
    for name, types in node.get_service_names_and_types():
        if name == service and types:
            return str(types[0])
    return None


def cluster_nodes(node: Node, worker: int | None) -> Callable[[str, str], bool]:
    """Whether a graph node (name, namespace) is `node` or another worker's node of its cluster: worker 0's node
    has the cluster's name and worker k's `<name>_w<k>`, all in one namespace. `worker` is `node`'s index in its
    cluster, None for a gateway alone."""
    name, namespace = node.get_name(), node.get_namespace()
    if worker is None:
        return lambda other, other_namespace: (other, other_namespace) == (name, namespace)
    base = name.removesuffix(f'_w{worker}') if worker else name
    pattern = re.compile(re.escape(base) + r'(_w[0-9]+)?')
    return lambda other, other_namespace: other_namespace == namespace and pattern.fullmatch(other) is not None


UNKNOWN_NODE = '_NODE_NAME_UNKNOWN_'
"""The node name the ROS graph gives an endpoint whose node it does not know (not yet, or no longer)."""


def request_topic(service: str) -> str:
    """The DDS topic that carries `service`'s requests (the rmw's naming: rq<service>Request)."""
    return f'rq{service}Request'


def served_elsewhere(node: Node, service: str, ours: Callable[[str, str], bool]) -> bool:
    """Whether a node that is not `ours` (see `cluster_nodes`) serves `service` in the ROS graph: one question,
    the endpoints that take the service's requests, each with its node. A server its node destroyed stays in the
    graph for a while, first under its node and then under no known node (the node's announcement and the
    endpoint's removal travel separately), and a sibling worker's servers are its clients': the cluster's shared
    claims decide those. So only the endpoints of known nodes other than `ours` count."""
    return any(
        endpoint.node_name != UNKNOWN_NODE and not ours(endpoint.node_name, endpoint.node_namespace)
        for endpoint in node.get_subscriptions_info_by_topic(request_topic(service), no_mangle=True)
    )

"""What the gateway asks the ROS graph: the types of topics and services, and conflicts with what exists."""

from __future__ import annotations

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

"""Declaring node parameters with a default and a description, in one call per parameter."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter


def declare(node: Node, name: str, default: Any, description: str) -> Any:
    """Declare `name` with `default` and `description`; return its (possibly overridden) value."""
    descriptor = ParameterDescriptor(description=description)
    if isinstance(default, list) and not default:
        node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor)
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            return []
        return list(value) if value is not None else []
    return node.declare_parameter(name, default, descriptor).value

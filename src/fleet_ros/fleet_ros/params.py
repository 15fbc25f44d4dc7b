"""Declaring node parameters with a default and a description, in one call per parameter."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    read_only: bool = False,
    value_range: tuple[float, float] | None = None,
) -> Any:
    """Declare `name` with `default` and `description`; return its (possibly overridden) value. `read_only`: it
    cannot change once the node runs (`ros2 param set` is refused); `value_range` (inclusive) for an int or float
    parameter is enforced by rclpy on every set."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if value_range is not None:
        low, high = value_range
        if isinstance(default, int) and not isinstance(default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
    if isinstance(default, list) and not default:
        node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor)
        try:
            value = node.get_parameter(name).value
        except ParameterUninitializedException:
            return []
        return list(value) if value is not None else []
    return node.declare_parameter(name, default, descriptor).value

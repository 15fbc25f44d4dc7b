"""NodeSpecs as ROS 2 launch actions, for launch/*.py. Imports `launch`/`launch_ros` only when called (they exist on
ROS 2 installs, not in the pip-only environment)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fleet_bringup.nodes import NodeSpec


def to_action(spec: NodeSpec) -> Any:
    """A launch_ros Node for a ROS node (name, namespace, params files, then per-node parameters: later entries win,
    as with `--params-file ... -p ...` in `fleetctl up`); an ExecuteProcess for a plain program."""
    from launch.actions import ExecuteProcess  # noqa: PLC0415 - only on ROS 2 installs
    from launch_ros.actions import Node  # noqa: PLC0415 - only on ROS 2 installs
    from launch_ros.substitutions import ExecutableInPackage  # noqa: PLC0415 - only on ROS 2 installs

    if spec.is_ros_node:
        return Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.node_name,
            namespace=spec.namespace,
            parameters=[*spec.params_files, dict(spec.parameters)],
            arguments=list(spec.arguments),
            output='screen',
        )
    return ExecuteProcess(
        cmd=[ExecutableInPackage(executable=spec.executable, package=spec.package), *spec.arguments],
        name=spec.label.replace('/', '_'),
        output='screen',
    )


def opaque(build: Callable[[Callable[[str], str]], Sequence[NodeSpec]]) -> Any:
    """An OpaqueFunction that resolves launch arguments, builds the node set and turns it into actions."""
    from launch.actions import OpaqueFunction  # noqa: PLC0415 - only on ROS 2 installs
    from launch.substitutions import LaunchConfiguration  # noqa: PLC0415 - only on ROS 2 installs

    def perform(context: Any) -> list[Any]:
        def arg(name: str) -> str:
            return str(LaunchConfiguration(name).perform(context))

        return [to_action(spec) for spec in build(arg)]

    return OpaqueFunction(function=perform)


def flag(text: str) -> bool:
    return text.strip().lower() in ('1', 'true', 'yes', 'on')

"""NodeSpecs as ROS 2 launch actions, for launch/*.py. Imports `launch`/`launch_ros` only when called (they exist on
ROS 2 installs and in the overlay `make setup` builds, not in the bare pip-only environment).

Launch itself ignores arguments a file does not declare (`site_id:=…` on a file that takes `site`), so every launch
file's node set is built by one OpaqueFunction that first compares the launch configurations with the declared
arguments and raises LaunchArgumentError naming the unknown and missing ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleet_bringup.nodes import BringupError, NodeSpec

BOOLEAN_CHOICES = ('true', 'false')


class LaunchArgumentError(ValueError):
    """A launch file was given an argument it does not declare, lacks a required one, or got an unusable value."""


@dataclass(frozen=True, slots=True)
class Argument:
    """A launch argument: required when `default` is None; `choices` restricts its values (launch checks them)."""

    name: str
    description: str
    default: str | None = None
    choices: tuple[str, ...] = ()


def flag_argument(name: str, description: str, default: bool) -> Argument:
    return Argument(name, description, default=str(default).lower(), choices=BOOLEAN_CHOICES)


def check_arguments(launch_file: str, declared: Sequence[Argument], given: Mapping[str, object]) -> None:
    """Raise LaunchArgumentError when `given` (the launch configurations) has names `declared` lacks, or lacks a
    required one."""
    names = [a.name for a in declared]
    unknown = sorted(set(given) - set(names))
    missing = [a.name for a in declared if a.default is None and a.name not in given]
    problems = []
    if unknown:
        problems.append(f'unknown argument(s) {", ".join(f"{n}:=" for n in unknown)}')
    if missing:
        problems.append(f'missing required argument(s) {", ".join(f"{n}:=" for n in missing)}')
    if problems:
        raise LaunchArgumentError(
            f'{launch_file}: {"; ".join(problems)}. It takes: {", ".join(names)} '
            f'(ros2 launch fleet_bringup {launch_file} --show-args describes them)'
        )


def to_action(spec: NodeSpec) -> Any:
    """A launch_ros Node for a ROS node (name, namespace, params files, then per-node parameters: later entries win,
    as with `--params-file ... -p ...` in `fleetctl up`); an ExecuteProcess for a plain program.

    Per-node parameters go as `Parameter`s, which launch_ros passes as `-p name:=value`. A dict would be written to a
    `launch_params_*` file in the temp directory that launch_ros never removes: one per node and launch."""
    from launch.actions import ExecuteProcess  # noqa: PLC0415 - only on ROS 2 installs
    from launch_ros.actions import Node  # noqa: PLC0415 - only on ROS 2 installs
    from launch_ros.parameter_descriptions import Parameter  # noqa: PLC0415 - only on ROS 2 installs
    from launch_ros.substitutions import ExecutableInPackage  # noqa: PLC0415 - only on ROS 2 installs

    if spec.is_ros_node:
        return Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.node_name,
            namespace=spec.namespace,
            parameters=[*spec.params_files, *(Parameter(name, value) for name, value in spec.parameters.items())],
            arguments=list(spec.arguments),
            output='screen',
        )
    return ExecuteProcess(
        cmd=[ExecutableInPackage(executable=spec.executable, package=spec.package), *spec.arguments],
        name=spec.label.replace('/', '_'),
        output='screen',
    )


def launch_description(
    launch_file: str, arguments: Sequence[Argument], build: Callable[[Callable[[str], str]], Sequence[NodeSpec]]
) -> Any:
    """The LaunchDescription of a launch file: its declared arguments, then an OpaqueFunction that checks the
    arguments given, resolves them, builds the node set with `build(arg)` and turns it into actions."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: PLC0415 - only on ROS 2 installs
    from launch.substitutions import LaunchConfiguration  # noqa: PLC0415 - only on ROS 2 installs

    from launch import LaunchDescription  # noqa: PLC0415 - only on ROS 2 installs

    declarations = []
    for argument in arguments:
        options: dict[str, Any] = {'description': argument.description}
        if argument.default is not None:
            options['default_value'] = argument.default
        if argument.choices:
            options['choices'] = list(argument.choices)
        declarations.append(DeclareLaunchArgument(argument.name, **options))

    def perform(context: Any) -> list[Any]:
        check_arguments(launch_file, arguments, context.launch_configurations)

        def arg(name: str) -> str:
            return str(LaunchConfiguration(name).perform(context))

        try:
            specs = build(arg)
        except BringupError as exc:
            raise LaunchArgumentError(f'{launch_file}: {exc}') from None
        return [to_action(spec) for spec in specs]

    return LaunchDescription([*declarations, OpaqueFunction(function=perform)])


def flag(text: str) -> bool:
    return text.strip().lower() in ('1', 'true', 'yes', 'on')


def integer(name: str, text: str) -> int:
    """A launch argument as an int, or LaunchArgumentError naming it."""
    try:
        return int(text)
    except ValueError:
        raise LaunchArgumentError(f'launch argument {name}:= must be an integer, got {text!r}') from None

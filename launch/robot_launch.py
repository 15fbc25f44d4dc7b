"""One robot computer: the fleetlanes agent for one robot, with its executor plug-in.

    ros2 launch launch/robot_launch.py agent_id:=a1_r001 executor:=my_robot.fleet:executor_factory

The node comes from fleet_bringup.nodes.robot_nodes (site and shard are looked up in the fleet layout)."""

from __future__ import annotations

from pathlib import Path

from launch.actions import DeclareLaunchArgument

from fleet_core.config import load_fleet_config
from fleet_bringup.nodes import default_options, robot_nodes
from fleet_bringup.launch_actions import opaque
from launch import LaunchDescription

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'


def build(arg):  # type: ignore[no-untyped-def]
    options = default_options(arg('fleet_config'), store_dir=arg('store_dir'))
    return robot_nodes(load_fleet_config(options.fleet_config), arg('agent_id'), options, executor=arg('executor'))


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'fleet_config',
                default_value=str(CONFIG_DIR / 'fleet.yaml'),
                description='fleet layout YAML listing this agent; params.yaml is read from its directory',
            ),
            DeclareLaunchArgument('agent_id', description='id of this robot in the fleet layout, e.g. a1_r001'),
            DeclareLaunchArgument(
                'executor',
                default_value='sleep',
                description="executor plug-in: 'sleep' or 'package.module:function' returning an executor factory",
            ),
            DeclareLaunchArgument(
                'store_dir',
                default_value='',
                description='directory of the dedup store on this robot (empty: ~/.fleetlanes/agents)',
            ),
            opaque(build),
        ]
    )

"""One robot computer: the fleetlanes agent for one robot, with its executor plug-in.

    ros2 launch fleet_bringup robot_launch.py agent_id:=a1_r001 executor:=my_robot.fleet:executor_factory

The node comes from fleet_bringup.nodes.robot_nodes (site and shard are looked up in the fleet layout). Arguments
the file does not declare are refused (ros2 launch fleet_bringup robot_launch.py --show-args lists them)."""

from __future__ import annotations

from pathlib import Path

from fleet_bringup.launch_actions import Argument, launch_description
from fleet_bringup.nodes import default_options, robot_nodes
from fleet_core.config import load_fleet_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'

ARGUMENTS = (
    Argument(
        'fleet_config',
        'fleet layout YAML listing this agent; params.yaml is read from its directory',
        default=str(CONFIG_DIR / 'fleet.yaml'),
    ),
    Argument('agent_id', 'id of this robot in the fleet layout, e.g. a1_r001 (site and shard come from the layout)'),
    Argument(
        'executor',
        "executor plug-in: 'sleep' or 'package.module:function' returning an executor factory",
        default='sleep',
    ),
    Argument('store_dir', 'directory of the dedup store on this robot (empty: ~/.fleetlanes/agents)', default=''),
)


def build(arg):  # type: ignore[no-untyped-def]
    options = default_options(arg('fleet_config'), store_dir=arg('store_dir'))
    return robot_nodes(load_fleet_config(options.fleet_config), arg('agent_id'), options, executor=arg('executor'))


def generate_launch_description():  # type: ignore[no-untyped-def]
    return launch_description('robot_launch.py', ARGUMENTS, build)

"""A whole simulated deployment: the site servers of site_launch.py plus simulator host processes for every robot.

    ros2 launch launch/sim_launch.py robots_per_host:=125

The node set comes from fleet_bringup.nodes.node_set with sim enabled, as `fleetctl up --sim` starts it."""

from __future__ import annotations

from pathlib import Path

from launch.actions import DeclareLaunchArgument

from fleet_core.config import load_fleet_config
from fleet_bringup.nodes import default_options, node_set
from fleet_bringup.launch_actions import flag, opaque
from launch import LaunchDescription

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'


def build(arg):  # type: ignore[no-untyped-def]
    options = default_options(
        arg('fleet_config'),
        sites=tuple(s for s in arg('site').split(',') if s),
        standbys=int(arg('standbys')),
        gateway=flag(arg('gateway')),
        foxglove=flag(arg('foxglove')),
        sim=True,
        robots_per_host=int(arg('robots_per_host')),
        store_dir=arg('store_dir'),
    )
    return node_set(load_fleet_config(options.fleet_config), options)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'fleet_config',
                default_value=str(CONFIG_DIR / 'fleet.yaml'),
                description='fleet layout YAML; params, sim, gateway YAML and workflows/ are read from its directory',
            ),
            DeclareLaunchArgument('site', default_value='', description='comma-separated sites to run (empty: all)'),
            DeclareLaunchArgument('standbys', default_value='1', description='hot standby orchestrators per shard'),
            DeclareLaunchArgument('gateway', default_value='true', description='start the rosbridge WebSocket gateway'),
            DeclareLaunchArgument('foxglove', default_value='true', description='start the Foxglove WebSocket server'),
            DeclareLaunchArgument(
                'robots_per_host', default_value='125', description='simulated robots per fleet_sim_host process'
            ),
            DeclareLaunchArgument(
                'store_dir',
                default_value='',
                description="root of the simulated robots' dedup stores (one subdirectory per host; empty: default)",
            ),
            opaque(build),
        ]
    )

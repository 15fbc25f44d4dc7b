"""Site server: an orchestrator and hot standby(s) per shard, the rosbridge gateway and the Foxglove server.

    ros2 launch launch/site_launch.py fleet_config:=/etc/fleetlanes/fleet.yaml site:=site_a

The node set comes from fleet_bringup.nodes.site_nodes, the same function `fleetctl up` uses."""

from __future__ import annotations

from pathlib import Path

from launch.actions import DeclareLaunchArgument

from fleet_core.config import load_fleet_config
from fleet_bringup.nodes import default_options, site_nodes
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
    )
    return site_nodes(load_fleet_config(options.fleet_config), options)


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                'fleet_config',
                default_value=str(CONFIG_DIR / 'fleet.yaml'),
                description='fleet layout YAML; params.yaml, gateway.yaml and workflows/ are read from its directory',
            ),
            DeclareLaunchArgument('site', default_value='', description='comma-separated sites to serve (empty: all)'),
            DeclareLaunchArgument('standbys', default_value='1', description='hot standby orchestrators per shard'),
            DeclareLaunchArgument('gateway', default_value='true', description='start the rosbridge WebSocket gateway'),
            DeclareLaunchArgument('foxglove', default_value='true', description='start the Foxglove WebSocket server'),
            opaque(build),
        ]
    )

"""Site server: an orchestrator and hot standby(s) per shard, the rosbridge gateway and the Foxglove server.

    ros2 launch fleet_bringup site_launch.py site:=site_a
    ros2 launch launch/site_launch.py fleet_config:=/etc/fleetlanes/fleet.yaml site:=site_a gateway:=false

The node set comes from fleet_bringup.nodes.site_nodes, the same function `fleetctl up` uses. Arguments the file
does not declare are refused (ros2 launch fleet_bringup site_launch.py --show-args lists them)."""

from __future__ import annotations

from pathlib import Path

from fleet_bringup.launch_actions import Argument, flag, flag_argument, integer, launch_description
from fleet_bringup.nodes import default_options, site_nodes
from fleet_core.config import load_fleet_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'

ARGUMENTS = (
    Argument(
        'fleet_config',
        'fleet layout YAML; params.yaml, gateway.yaml and workflows/ are read from its directory',
        default=str(CONFIG_DIR / 'fleet.yaml'),
    ),
    Argument('site', 'comma-separated sites to serve (empty: all)', default=''),
    Argument('standbys', 'hot standby orchestrators per shard', default='1'),
    flag_argument('gateway', 'start the rosbridge WebSocket gateway', True),
    Argument(
        'gateway_port',
        'WebSocket port of the rosbridge gateway (0: any free port; empty: gateway.yaml, 9090)',
        default='',
    ),
    flag_argument('foxglove', 'start the Foxglove WebSocket server', True),
    Argument('foxglove_port', 'WebSocket port of the Foxglove server (0: any free port; empty: 8765)', default=''),
)


def build(arg):  # type: ignore[no-untyped-def]
    options = default_options(
        arg('fleet_config'),
        sites=tuple(s for s in arg('site').split(',') if s),
        standbys=integer('standbys', arg('standbys')),
        gateway=flag(arg('gateway')),
        gateway_port=integer('gateway_port', arg('gateway_port')) if arg('gateway_port') else None,
        foxglove=flag(arg('foxglove')),
        foxglove_port=integer('foxglove_port', arg('foxglove_port')) if arg('foxglove_port') else None,
    )
    return site_nodes(load_fleet_config(options.fleet_config), options)


def generate_launch_description():  # type: ignore[no-untyped-def]
    return launch_description('site_launch.py', ARGUMENTS, build)

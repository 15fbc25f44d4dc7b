"""A whole simulated deployment: the site servers of site_launch.py plus simulator host processes for every robot.

    ros2 launch fleet_bringup sim_launch.py robots_per_host:=125

The node set comes from fleet_bringup.nodes.node_set with sim enabled, as `fleetctl up --sim` starts it; the
simulator hosts run fleet_sim's `fleet_sim_host` (only this file needs fleet_sim installed). Arguments the file does
not declare are refused (ros2 launch fleet_bringup sim_launch.py --show-args lists them)."""

from __future__ import annotations

from pathlib import Path

from fleet_bringup.launch_actions import Argument, flag, flag_argument, integer, launch_description
from fleet_bringup.nodes import default_options, node_set
from fleet_core.config import load_fleet_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'config'

ARGUMENTS = (
    Argument(
        'fleet_config',
        'fleet layout YAML; params, sim, gateway YAML and workflows/ are read from its directory',
        default=str(CONFIG_DIR / 'fleet.yaml'),
    ),
    Argument('site', 'comma-separated sites to run (empty: all)', default=''),
    Argument('standbys', 'hot standby orchestrators per shard', default='1'),
    flag_argument('gateway', 'start the rosbridge WebSocket gateway', True),
    Argument(
        'gateway_port',
        'WebSocket port of the rosbridge gateway (0: any free port; empty: gateway.yaml, 9090)',
        default='',
    ),
    flag_argument('foxglove', 'start the Foxglove WebSocket server', True),
    Argument('foxglove_port', 'WebSocket port of the Foxglove server (0: any free port; empty: 8765)', default=''),
    Argument('robots_per_host', 'simulated robots per fleet_sim_host process', default='125'),
    Argument(
        'store_dir',
        "root of the simulated robots' dedup stores (one subdirectory per host; empty: default)",
        default='',
    ),
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
        sim=True,
        robots_per_host=integer('robots_per_host', arg('robots_per_host')),
        store_dir=arg('store_dir'),
    )
    return node_set(load_fleet_config(options.fleet_config), options)


def generate_launch_description():  # type: ignore[no-untyped-def]
    return launch_description('sim_launch.py', ARGUMENTS, build)

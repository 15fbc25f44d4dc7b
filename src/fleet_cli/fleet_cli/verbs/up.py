"""`fleetctl up [CONFIG]`: start a site's node set (orchestrators + standbys, gateway, Foxglove server, optionally
simulated robots) as subprocesses — the same processes and parameters as launch/site_launch.py and sim_launch.py,
from the same function (fleet_bringup.nodes) — and stop them all cleanly on Ctrl-C."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from fleet_bringup.nodes import BringupError, BringupOptions, NodeSpec, default_options, describe, node_set
from fleet_bringup.processes import LaunchError, Supervisor
from fleet_core.config import DEFAULT_CONFIG_ENV, ConfigError, load_fleet_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
POLL_SEC = 0.2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser('up', help='start the node set of a fleet config as subprocesses (Ctrl-C stops)')
    parser.add_argument('fleet_config', nargs='?', help='fleet layout YAML (default: --config, $FLEETLANES_CONFIG)')
    parser.add_argument('--site', action='append', default=[], help='only these sites (repeatable; default: all)')
    parser.add_argument('--standbys', type=int, default=1, help='hot standby orchestrators per shard')
    parser.add_argument('--sim', action='store_true', help='also start simulated robots (fleet_sim_host processes)')
    parser.add_argument('--robots-per-host', type=int, default=125, help='simulated robots per host process')
    parser.add_argument('--no-gateway', action='store_true', help='do not start the rosbridge gateway')
    parser.add_argument('--no-foxglove', action='store_true', help='do not start the Foxglove server')
    parser.add_argument('--gateway-port', type=int, help='gateway WebSocket port (0: any free; default: gateway.yaml)')
    parser.add_argument('--foxglove-port', type=int, help='Foxglove server port (0: any free; default: 8765)')
    parser.add_argument('--state-dir', default='', help='dedup stores of simulated robots (default: per host)')
    parser.add_argument('--log-dir', default='', help='one log file per process (default: a new /tmp directory)')
    parser.add_argument('--ready-file', default='', help='write {"pids": {label: pid}} as JSON once started')
    parser.add_argument('--dry-run', action='store_true', help='print the node set as JSON lines and exit')
    parser.set_defaults(func=run)


def options_from(args: argparse.Namespace) -> BringupOptions:
    config = args.fleet_config or args.config or os.environ.get(DEFAULT_CONFIG_ENV) or 'config/fleet.yaml'
    return default_options(
        config,
        sites=tuple(args.site),
        standbys=args.standbys,
        sim=args.sim,
        robots_per_host=args.robots_per_host,
        gateway=not args.no_gateway,
        gateway_port=args.gateway_port,
        foxglove_port=args.foxglove_port,
        foxglove=not args.no_foxglove,
        store_dir=args.state_dir,
    )


def plan(args: argparse.Namespace) -> list[NodeSpec]:
    """The node set `up` would start (raises ConfigError/BringupError)."""
    options = options_from(args)
    return node_set(load_fleet_config(options.fleet_config), options)


def run(args: argparse.Namespace) -> int:
    try:
        specs = plan(args)
    except (ConfigError, BringupError) as exc:
        print(f'fleetctl up: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        for row in describe(specs):
            print(json.dumps(row))
        return EXIT_OK
    env = dict(os.environ)
    env.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')  # network rule: stay on this host unless told
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix='fleetctl-up-'))
    supervisor = Supervisor(log_dir, env)
    stop = {'requested': False}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop['requested'] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for spec in specs:
            child = supervisor.start(spec)
            print(f'started {spec.label:<32} pid {child.pid:<8} log {child.log_path}', flush=True)
        if args.ready_file:
            ready = Path(args.ready_file)
            ready.with_suffix('.tmp').write_text(
                json.dumps({'pids': {c.spec.label: c.pid for c in supervisor.children}})
            )
            ready.with_suffix('.tmp').replace(ready)
        print(
            f'{len(specs)} processes up (ROS_DOMAIN_ID={env.get("ROS_DOMAIN_ID", "0")}); Ctrl-C stops them', flush=True
        )
        reported: set[int] = set()
        while not stop['requested']:
            for child in supervisor.exited():
                if child.pid not in reported:
                    reported.add(child.pid)
                    print(f'{child.spec.label} exited with {child.popen.returncode}; log tail:\n{child.tail(10)}',
                          file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(POLL_SEC)
    except LaunchError as exc:
        print(f'fleetctl up: error: {exc}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        print(f'stopping {len(supervisor.children)} processes', file=sys.stderr, flush=True)
        supervisor.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK

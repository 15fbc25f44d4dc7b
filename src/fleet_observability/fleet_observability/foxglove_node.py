"""`fleet_foxglove`: the Foxglove server as an ordinary, remappable rclpy node.

Its name and namespace come from the usual ROS arguments (`--ros-args -r __node:=… -r __ns:=…`), its settings
from declared, described, read-only parameters (`-p port:=8766`), so that launch can run one per site server.
The older command-line flags (`--port`, `--config`, …) still work and override the parameters.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from fleet_core import yaml_config
from fleet_observability.foxglove_gate import GateSettings
from fleet_observability.foxglove_server import (
    DEFAULT_SERVICE_GLOBS,
    FleetFoxgloveBridge,
    FoxgloveSettings,
    FoxgloveStartError,
)
from fleet_observability.foxglove_services import AccessConfigError, AccessPolicy, parse_tokens
from fleet_observability.topic_match import DEFAULT_TOPIC_GLOBS, GlobError
from fleet_ros.node import TypedNode
from fleet_ros.runtime import RosProgram, run_program

NODE_NAME = 'fleet_foxglove'

PARAMETERS: tuple[tuple[str, Any, str, tuple[float, float] | None], ...] = (
    ('host', '127.0.0.1', 'bind address; anything but loopback requires tokens_file', None),
    ('port', 8765, 'TCP port clients connect to (0 picks a free one)', (0, 65535)),
    ('server_name', 'fleetlanes', 'server name shown by Foxglove', None),
    ('topics', list(DEFAULT_TOPIC_GLOBS), 'topic globs exposed as channels (* within a segment, ** across)', None),
    ('services', list(DEFAULT_SERVICE_GLOBS), 'service globs forwarded as Foxglove services', None),
    ('tokens_file', '', 'YAML mapping token to role (viewer, operator, site-link); empty: no tokens', None),
    ('fleet_config', '', 'fleet layout YAML shown as read-only parameters; empty: none', None),
    ('tls_cert', '', 'PEM certificate: serve wss:// only (with tls_key); empty: plain ws://', None),
    ('tls_key', '', 'PKCS#8 PEM private key of tls_cert', None),
    ('discovery_period_sec', 0.5, 'how often the ROS graph is scanned for new topics and services', (0.05, 60.0)),
    ('service_timeout_sec', 5.0, 'deadline of a forwarded service call', (0.1, 300.0)),
    ('message_backlog', 1024, 'messages buffered per client before the oldest is dropped', (16, 1_000_000)),
    ('time_period_sec', 0.5, 'how often the server time is broadcast', (0.01, 60.0)),
    ('max_clients', 64, 'connections accepted at once when tokens are configured', (1, 10_000)),
    ('max_failed_logins', 3, 'failed logins after which a connection is closed', (1, 100)),
    ('login_backoff_sec', 0.5, 'wait before the login after a failure; doubles per further failure', (0.0, 60.0)),
)
"""(name, default, description, range): every parameter the node declares; all are read-only."""


def _descriptor(description: str, default: Any, bounds: tuple[float, float] | None) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=description, read_only=True)
    if bounds is not None and isinstance(default, int):
        descriptor.integer_range = [IntegerRange(from_value=int(bounds[0]), to_value=int(bounds[1]), step=1)]
    elif bounds is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=bounds[0], to_value=bounds[1])]
    return descriptor


def _path(value: str) -> Path | None:
    return Path(value) if value else None


class FoxgloveServerNode(TypedNode):
    """Declares the server's parameters and runs a `FleetFoxgloveBridge` with them (`start()`, `close()`).

    Raises AccessConfigError, ValueError or OSError (naming the parameter or file) for unusable settings.
    """

    def __init__(self, *, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        values = {
            name: self.declare_parameter(name, default, _descriptor(description, default, bounds)).value
            for name, default, description, bounds in PARAMETERS
        }
        tokens: dict[str, str] = {}
        if values['tokens_file']:
            raw = yaml_config.read_yaml(values['tokens_file'], 'foxglove tokens file', AccessConfigError)
            tokens = parse_tokens(raw, values['tokens_file'])
        self.policy = AccessPolicy(tokens=tokens)
        self.policy.check_bind(values['host'])
        self.settings = FoxgloveSettings(
            host=values['host'],
            port=values['port'],
            name=values['server_name'],
            topics=tuple(values['topics']),
            services=tuple(values['services']),
            discovery_period_sec=values['discovery_period_sec'],
            service_timeout_sec=values['service_timeout_sec'],
            message_backlog=values['message_backlog'],
            time_period_sec=values['time_period_sec'],
            tls_cert=_path(values['tls_cert']),
            tls_key=_path(values['tls_key']),
            max_clients=values['max_clients'],
            gate=GateSettings(
                max_failed_logins=values['max_failed_logins'], login_backoff_sec=values['login_backoff_sec']
            ),
            parameters=_fleet_parameters(values['fleet_config']),
        )
        self.bridge = FleetFoxgloveBridge(self, self.settings, self.policy)


def _fleet_parameters(config_path: str) -> dict[str, Any]:
    if not config_path:
        return {}
    from fleet_core.config import load_fleet_config  # noqa: PLC0415 - optional, only with a fleet config

    config = load_fleet_config(config_path)
    params: dict[str, Any] = {'fleet.sites': list(config.sites), 'fleet.agents_total': config.agent_count}
    for shard in config.shards:
        params[f'fleet.{shard.site_id}.{shard.shard_id}.agents'] = len(shard.agents)
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='fleet_foxglove',
        description='Foxglove WebSocket server for the fleet. Settings are ROS parameters '
        '(--ros-args -p port:=8766 -r __node:=foxglove_a); these flags override them.',
    )
    parser.add_argument('--host', help='bind address (non-loopback requires --tokens)')
    parser.add_argument('--port', type=int, help='TCP port (0 picks a free one)')
    parser.add_argument('--topic', action='append', dest='topics', help=f'topic glob (default {DEFAULT_TOPIC_GLOBS})')
    parser.add_argument('--service', action='append', dest='services', help='service glob to forward')
    parser.add_argument('--tokens', dest='tokens_file', help='YAML file mapping token to role (viewer, operator)')
    parser.add_argument('--config', dest='fleet_config', help='fleet layout YAML, shown as read-only parameters')
    parser.add_argument('--tls-cert', dest='tls_cert', help='PEM certificate (serve wss://)')
    parser.add_argument('--tls-key', dest='tls_key', help='PKCS#8 PEM key of --tls-cert')
    return parser


def flag_overrides(args: argparse.Namespace) -> list[Parameter]:
    """The flags given on the command line, as parameter overrides."""
    return [Parameter(name, value=value) for name, value in vars(args).items() if value is not None]


def main(argv: Sequence[str] | None = None) -> int:
    full = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    args = build_parser().parse_args(remove_ros_args(full)[1:])
    return run_program(
        'fleet_foxglove',
        lambda program: _run(program, flag_overrides(args)),
        args=full,
        startup_errors=(AccessConfigError, GlobError, FoxgloveStartError, OSError, ValueError),
    )


def _run(program: RosProgram, overrides: list[Parameter]) -> None:
    node = program.add_node(FoxgloveServerNode(parameter_overrides=overrides, context=program.context))
    bridge = node.bridge
    try:
        bridge.start()
    except BaseException:
        bridge.close()
        raise
    print(f'fleet_foxglove: listening on {bridge.url}', flush=True)

    async def close_bridge() -> None:
        bridge.close()

    # The SDK serves on its own threads: nothing to run on the loop but the wait for SIGINT/SIGTERM.
    program.run_async(cleanup=close_bridge)

"""`fleet_gateway` console script: load the config, serve on fleet_ros.runtime until SIGINT/SIGTERM.

The gateway is an ordinary remappable rclpy node: its name and namespace come from ROS arguments
(`--ros-args -r __node:=gateway_site_a -r __ns:=/site_a`), and `config_file`, `host`, `port` and `metrics_port` are
declared, described, read-only parameters (`-p port:=9091`), so two site servers on one domain do not clash. The
flags `--config`, `--host` and `--port` still work and win over the parameters; parameters win over the file."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import rclpy
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from fleet_gateway.config import ConfigError, GatewayConfig, load_acl, load_gateway_config, load_tokens
from fleet_gateway.metrics import serve_gateway_metrics
from fleet_gateway.ros.endpoints import RosEndpoints
from fleet_gateway.ros.topics import OnMessages
from fleet_gateway.server import GatewayServer
from fleet_gateway.transport.workers import WorkerRole, run_cluster, unblock_stop_signals, worker_count
from fleet_observability.metrics import MetricsServeError
from fleet_ros.runtime import RosProgram, run_program

log = logging.getLogger('fleet_gateway')


NODE_NAME = 'fleet_gateway'
PARAMETERS = ('config_file', 'host', 'port', 'metrics_port')
"""The node's declared parameters (all read-only, read once at start)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The gateway's own flags; ROS arguments (`--ros-args ...`) are left to rclpy."""
    parser = argparse.ArgumentParser(prog='fleet_gateway', description='rosbridge v2 WebSocket gateway')
    parser.add_argument('--config', type=Path, help='gateway YAML (see config/gateway.yaml); defaults are safe')
    parser.add_argument('--host', help='override fleet_gateway.host')
    parser.add_argument('--port', type=int, help='override fleet_gateway.port (0: any free port)')
    parser.add_argument('--ready-file', type=Path, help='write {"port", "pid"} as JSON here once listening')
    parser.add_argument('--log-level', default='INFO')
    parser.add_argument(
        '--workers', type=int, help='worker processes sharing the port (default: the number of cores; 1: one process)'
    )
    args = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args(remove_ros_args(['fleet_gateway', *args])[1:])


def _describe(text: str, *, port: bool = False, low: int = 0) -> ParameterDescriptor:
    ranges = [IntegerRange(from_value=low, to_value=65535, step=1)] if port else []
    return ParameterDescriptor(description=text, read_only=True, integer_range=ranges)


def configure(node: Node, args: argparse.Namespace) -> GatewayConfig:
    """The gateway config: the file (flag `--config` or parameter `config_file`), then the node's parameters
    `host`, `port`, `metrics_port` (declared with the file's values as defaults), then the flags."""
    default_file = str(args.config) if args.config else ''
    path = node.declare_parameter(
        'config_file', default_file, _describe('gateway YAML (see config/gateway.yaml); empty: safe defaults')
    ).value
    if args.config:
        path = str(args.config)
    config = load_gateway_config(path) if path else GatewayConfig()
    host = node.declare_parameter(
        'host', config.host, _describe('bind address; 127.0.0.1 unless exposed on purpose (then with TLS)')
    ).value
    port = node.declare_parameter(
        'port', config.port, _describe('WebSocket port (0: any free port, in the ready file)', port=True)
    ).value
    metrics_port = node.declare_parameter(
        'metrics_port',
        config.metrics_port,
        _describe('Prometheus /metrics port on 127.0.0.1 (0: any free port; -1: off)', port=True, low=-1),
    ).value
    overrides = {'host': args.host or host, 'port': args.port if args.port is not None else port}
    return dataclasses.replace(config, metrics_port=metrics_port, **overrides)


async def serve(
    config: GatewayConfig, node: Node, ready_file: Path | None, worker: WorkerRole | None = None, *, stop: asyncio.Event
) -> None:
    """Serve until `stop` is set (the program runtime sets it on SIGINT/SIGTERM), then close."""
    policy = load_acl(config.acl_file)
    tokens = load_tokens(config.tokens_file)
    if not len(tokens) and config.anonymous_role is None:
        log.warning(
            'no tokens configured (tokens_file or $FLEET_GATEWAY_TOKENS) and no anonymous_role: '
            'every client will be refused'
        )

    def endpoints(loop: asyncio.AbstractEventLoop, on_messages: OnMessages) -> RosEndpoints:
        return RosEndpoints(node, loop, config, policy, on_messages)

    server = GatewayServer(config, policy, tokens, endpoints, worker.shared(config) if worker is not None else None)
    await server.start()
    reporter = None
    if worker is not None:  # a cluster's worker: the parent serves the metrics and waits for its own ready file
        reporter = asyncio.get_running_loop().create_task(worker.report(server.stats, node.get_name()))
        ready_file = worker.ready_file
    metrics = None
    if config.metrics_port >= 0:
        metrics = serve_gateway_metrics(server.stats, asyncio.get_running_loop(), config.metrics_port, node.get_name())
        log.info('metrics at %s', metrics.url)
    if ready_file is not None:
        tmp = ready_file.with_suffix('.tmp')
        ready = {'port': server.port, 'pid': os.getpid(), 'metrics_port': metrics.port if metrics else None}
        tmp.write_text(json.dumps(ready))
        tmp.replace(ready_file)
    await stop.wait()
    if reporter is not None:
        reporter.cancel()
    log.info('shutting down: %s', {k: v for k, v in server.stats().items() if k != 'per_client'})
    if worker is not None:  # the figures just logged, for the parent's sum (again below if closing completes)
        worker.snapshot(server.stats(), node.get_name())
    if metrics is not None:
        metrics.close()
    await server.close()
    if worker is not None:
        worker.snapshot(server.stats(), node.get_name())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    worker = WorkerRole.from_env()
    if worker is None:
        try:
            workers = worker_count(args.workers)
        except ValueError as exc:
            print(f'fleet_gateway: {exc}', file=sys.stderr)
            return 2
        if workers > 1:
            return run_cluster(list(sys.argv[1:] if argv is None else argv), workers, args.ready_file)
    logging.getLogger('websockets').setLevel(logging.WARNING)  # one INFO line per connection drowns storms
    ros_argv = ['fleet_gateway', *(sys.argv[1:] if argv is None else argv)]
    return run_program(
        'fleet_gateway',
        lambda program: _run(program, args, worker),
        args=ros_argv,
        startup_errors=(ConfigError, MetricsServeError, rclpy.exceptions.ParameterException),
    )


def _node(program: RosProgram, worker: WorkerRole | None) -> Node:
    """The gateway's node: name and namespace remappable (ROS arguments). A cluster's worker k > 0 is named after
    worker 0 (`<name>_w<k>`) and given the parameter values worker 0's node got (params files keyed by its name too)."""
    if worker is None or worker.index == 0:
        return Node(NODE_NAME, context=program.context)
    first, values = worker.first_node()
    return Node(
        NODE_NAME,
        context=program.context,
        cli_args=['--ros-args', '-r', f'__node:={worker.node_name(first)}'],  # a node's own arguments win
        parameter_overrides=[Parameter(name, value=value) for name, value in values.items()],
    )


def _run(program: RosProgram, args: argparse.Namespace, worker: WorkerRole | None) -> None:
    if worker is not None:
        unblock_stop_signals()  # the runtime handles them now: one that came while importing stops us quietly
    node = program.add_node(_node(program, worker))
    config = configure(node, args)
    if worker is not None:
        parameters = {name: node.get_parameter(name).value for name in PARAMETERS}
        config = worker.configure(config, node.get_name(), parameters)
    log.info('node %s: serving on %s:%d', node.get_fully_qualified_name(), config.host, config.port)
    program.run_async(
        lambda: serve(config, node, args.ready_file, worker, stop=program.stop_event), cancel_on_stop=False
    )


if __name__ == '__main__':
    sys.exit(main())

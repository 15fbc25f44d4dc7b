"""`fleet_gateway` console script: load the config, start rclpy in a SpinThread and serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from fleet_gateway.config import ConfigError, GatewayConfig, load_acl, load_gateway_config, load_tokens
from fleet_gateway.metrics import serve_gateway_metrics
from fleet_gateway.ros_side import RosEndpoints
from fleet_gateway.server import GatewayServer
from fleet_observability.metrics import MetricsServeError
from fleet_ros.spin import SpinThread

log = logging.getLogger('fleet_gateway')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='fleet_gateway', description='rosbridge v2 WebSocket gateway')
    parser.add_argument('--config', type=Path, help='gateway YAML (see config/gateway.yaml); defaults are safe')
    parser.add_argument('--host', help='override fleet_gateway.host')
    parser.add_argument('--port', type=int, help='override fleet_gateway.port (0: any free port)')
    parser.add_argument('--ready-file', type=Path, help='write {"port", "pid"} as JSON here once listening')
    parser.add_argument('--log-level', default='INFO')
    return parser.parse_args(argv)


async def serve(config: GatewayConfig, node: Node, ready_file: Path | None) -> None:
    policy = load_acl(config.acl_file)
    tokens = load_tokens(config.tokens_file)
    if not len(tokens) and config.anonymous_role is None:
        log.warning(
            'no tokens configured (tokens_file or $FLEET_GATEWAY_TOKENS) and no anonymous_role: '
            'every client will be refused'
        )

    def endpoints(loop: asyncio.AbstractEventLoop, on_messages: object) -> RosEndpoints:
        return RosEndpoints(node, loop, config, policy, on_messages)  # type: ignore[arg-type]

    server = GatewayServer(config, policy, tokens, endpoints)
    await server.start()
    metrics = None
    if config.metrics_port >= 0:
        metrics = serve_gateway_metrics(server.stats, asyncio.get_running_loop(), config.metrics_port, node.get_name())
        log.info('metrics at %s', metrics.url)
    if ready_file is not None:
        tmp = ready_file.with_suffix('.tmp')
        ready = {'port': server.port, 'pid': os.getpid(), 'metrics_port': metrics.port if metrics else None}
        tmp.write_text(json.dumps(ready))
        tmp.replace(ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info('shutting down: %s', {k: v for k, v in server.stats().items() if k != 'per_client'})
    if metrics is not None:
        metrics.close()
    await server.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    logging.getLogger('websockets').setLevel(logging.WARNING)  # one INFO line per connection drowns storms
    try:
        config = load_gateway_config(args.config) if args.config else GatewayConfig()
    except ConfigError as exc:
        print(f'fleet_gateway: {exc}', file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (('host', args.host), ('port', args.port)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    context = Context()
    rclpy.init(context=context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    executor = EventsExecutor(context=context)
    node = Node('fleet_gateway', context=context)
    executor.add_node(node)
    spin = SpinThread(executor, name='gateway-rclpy').start()
    try:
        asyncio.run(serve(config, node, args.ready_file))
    except (ConfigError, MetricsServeError) as exc:
        log.error('%s', exc)
        return 2
    finally:
        spin.stop()
        executor.shutdown()
        node.destroy_node()
        if context.ok():
            rclpy.shutdown(context=context)
    return 0


if __name__ == '__main__':
    sys.exit(main())

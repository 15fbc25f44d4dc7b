"""fleetctl watch: the status table, refreshed as shards publish (until Ctrl-C or --duration)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from fleet_cli.client import FleetClient, load_config
from fleet_cli.main import EXIT_OK, UsageError
from fleet_cli.verbs.status import StatusBoard, shard_keys
from fleet_core.config import ConfigError

REFRESH_SEC = 1.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('watch', help='live per-shard status table')
    p.add_argument('--site', action='append', default=[], help='site(s) to show (default: every site)')
    p.add_argument('--duration', type=float, default=0.0, help='stop after this many seconds (0 = until Ctrl-C)')
    p.add_argument('--json', action='store_true', help='a JSON line per shard at every refresh')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.duration < 0:
        raise UsageError(f'--duration must be >= 0, got {args.duration}')
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    keys = shard_keys(fleet, args.site)
    client = FleetClient('fleetctl_watch')
    interactive = sys.stdout.isatty() and not args.json
    end = time.monotonic() + args.duration if args.duration else float('inf')
    try:
        board = StatusBoard(keys)
        board.follow(client)
        while time.monotonic() < end and client.context.ok():
            client.spin(min(REFRESH_SEC, max(0.0, end - time.monotonic())))
            now = time.time()
            if args.json:
                for key in keys:
                    print(json.dumps(board.row(key, now)), flush=True)
                continue
            if interactive:
                print('\x1b[H\x1b[2J', end='')
            print(time.strftime('%H:%M:%S'), flush=False)
            print('\n'.join(board.table(now)), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return EXIT_OK

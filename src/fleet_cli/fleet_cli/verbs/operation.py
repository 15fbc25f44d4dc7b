"""fleetctl operation pause|resume --site A: pre-announced, staggered pause/resume of every agent of a site.

Each shard leader announces the operation (FleetOperation, latched) and sends it in waves (operations: block of
the fleet config). A resume is refused, before any shard is touched, unless every shard in scope is paused: each
leader is asked (GetShardState), never guessed from a latched topic that may be slow to arrive."""

from __future__ import annotations

import argparse
import getpass
import sys

from fleet_cli.client import DISCOVERY_WAIT_SEC, REPLY_TIMEOUT_SEC, ClientTimeout, FleetClient, load_config
from fleet_cli.main import EXIT_FAILED, EXIT_OK, UsageError
from fleet_cli.shard_calls import shard_states
from fleet_core import topics
from fleet_core.config import ConfigError
from fleet_core.waves import FleetOp
from fleet_interfaces.srv import RequestFleetOperation


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('operation', help='pause or resume a site in pre-announced staggered waves')
    p.add_argument('op', choices=['pause', 'resume'])
    p.add_argument('--site', required=True, help='site to pause or resume')
    p.add_argument('--shard', action='append', default=[], help='only these shards of the site (repeatable)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
        shards = list(fleet.shards_of(args.site))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.shard:
        unknown = sorted(set(args.shard) - {s.shard_id for s in shards})
        if unknown:
            raise UsageError(f'site {args.site!r} has no shard(s) {", ".join(unknown)}')
        shards = [s for s in shards if s.shard_id in args.shard]
    keys = [(s.site_id, s.shard_id) for s in shards]
    op = FleetOp.PAUSE if args.op == 'pause' else FleetOp.RESUME
    client = FleetClient('fleetctl_operation')
    try:
        if op is FleetOp.RESUME:
            states = shard_states(client, keys, DISCOVERY_WAIT_SEC)
            idle = [f'{s}/{h}' for s, h in keys if not states[(s, h)].paused]
            if idle:
                raise UsageError(f'{", ".join(idle)} not paused: nothing to resume (nothing changed)')
        clients = {
            key: client.node.create_client(RequestFleetOperation, topics.shard_operation_request(*key)) for key in keys
        }
        for key, srv in clients.items():
            client.spin_until(srv.service_is_ready, DISCOVERY_WAIT_SEC, f'operation service of {key[0]}/{key[1]}')
        request = RequestFleetOperation.Request(op=int(op), issued_by=getpass.getuser())
        futures = {key: srv.call_async(request) for key, srv in clients.items()}
        client.spin_until(lambda: all(f.done() for f in futures.values()), REPLY_TIMEOUT_SEC, 'operation replies')
    except ClientTimeout as exc:
        print(f'fleetctl operation: {exc}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    failed = 0
    waves = fleet.operations
    for (site, shard), future in futures.items():
        reply = future.result()
        if reply.ok:
            print(
                f'{site}/{shard}: {op.name} announced as {reply.operation_id} '
                f'(waves of {waves.wave_size} every {waves.wave_interval_sec}s after {waves.lead_time_sec}s)'
            )
        else:
            failed += 1
            print(f'{site}/{shard}: refused: {reply.error}', file=sys.stderr)
    return EXIT_OK if not failed else EXIT_FAILED

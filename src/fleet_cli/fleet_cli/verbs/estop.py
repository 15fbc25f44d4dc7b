"""fleetctl estop: engage (or --release) the latched e-stop of every shard in scope, all shards at once.

The scope must name something: --site and/or --shard site/shard. A release is refused, before any shard is touched,
unless every shard in scope is engaged (no partial state): each leader is asked (GetShardState), never guessed from
a latched topic that may be slow to arrive."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Sequence

from fleet_cli.client import DISCOVERY_WAIT_SEC, REPLY_TIMEOUT_SEC, ClientTimeout, FleetClient, load_config
from fleet_cli.main import EXIT_FAILED, EXIT_OK, UsageError
from fleet_cli.shard_calls import shard_states
from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig
from fleet_interfaces.srv import SetEStop

ShardKey = tuple[str, str]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('estop', help='engage or release the latched e-stop of a site or shards')
    p.add_argument('--site', action='append', default=[], help='every shard of this site (repeatable)')
    p.add_argument('--shard', action='append', default=[], help='site/shard (repeatable)')
    p.add_argument('--release', action='store_true', help='release (resume) instead of engaging')
    p.add_argument('--reason', default='', help='recorded with the e-stop state')
    p.set_defaults(func=run)


def scope_keys(fleet: FleetConfig, sites: Sequence[str], shards: Sequence[str]) -> list[ShardKey]:
    """Raises UsageError for an empty scope or an unknown site/shard."""
    if not sites and not shards:
        raise UsageError('empty e-stop scope: give --site SITE and/or --shard SITE/SHARD')
    keys: dict[ShardKey, None] = {}
    try:
        for site in sites:
            for shard in fleet.shards_of(site):
                keys[(shard.site_id, shard.shard_id)] = None
        for name in shards:
            site, sep, shard_id = name.partition('/')
            if not sep:
                raise UsageError(f"--shard {name!r}: expected 'site/shard'")
            shard = fleet.shard(site, shard_id)
            keys[(shard.site_id, shard.shard_id)] = None
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not keys:
        raise UsageError('empty e-stop scope: the selection names no shard')
    return list(keys)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    keys = scope_keys(fleet, args.site, args.shard)
    engage = not args.release
    issued_by = getpass.getuser()
    client = FleetClient('fleetctl_estop')
    try:
        if not engage:
            states = shard_states(client, keys, DISCOVERY_WAIT_SEC)
            idle = [f'{s}/{h}' for (s, h) in keys if not states[(s, h)].estop_engaged]
            if idle:
                raise UsageError(f'no e-stop is engaged on {", ".join(idle)}: nothing to release (nothing changed)')
        clients = {key: client.node.create_client(SetEStop, topics.shard_set_estop(*key)) for key in keys}
        for key, srv in clients.items():
            client.spin_until(srv.service_is_ready, DISCOVERY_WAIT_SEC, f'set_estop of {key[0]}/{key[1]} (no leader?)')
        request = SetEStop.Request(engage=engage, reason=args.reason, issued_by=issued_by)
        started = time.monotonic()
        futures = {key: srv.call_async(request) for key, srv in clients.items()}
        client.spin_until(lambda: all(f.done() for f in futures.values()), REPLY_TIMEOUT_SEC, 'e-stop replies')
        elapsed_ms = (time.monotonic() - started) * 1000.0
    except ClientTimeout as exc:
        print(f'fleetctl estop: {exc}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    failed = 0
    verb = 'ENGAGED' if engage else 'released'
    for (site, shard), future in futures.items():
        reply = future.result()
        if reply.ok:
            print(f'{site}/{shard}: e-stop {verb} (revision {reply.revision})')
        else:
            failed += 1
            print(f'{site}/{shard}: refused: {reply.error}', file=sys.stderr)
    print(f'{len(futures) - failed}/{len(futures)} shard(s) in {elapsed_ms:.0f} ms', file=sys.stderr)
    return EXIT_OK if not failed else EXIT_FAILED

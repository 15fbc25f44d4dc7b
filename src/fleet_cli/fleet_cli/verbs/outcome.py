"""fleetctl outcome ID...: each command's fate from the shard leaders' journals (GetOutcomes), for as long as the
journal retains it (outcome_retention_sec). Asks every shard in scope and keeps the most advanced answer per id."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fleet_cli.client import DISCOVERY_WAIT_SEC, FleetClient, load_config
from fleet_cli.main import EXIT_FAILED, EXIT_OK, UsageError
from fleet_cli.shard_calls import outcomes_of
from fleet_core.config import ConfigError
from fleet_core.model import Outcome
from fleet_core.routing import route_targets
from fleet_core.shard_journal import CommandState

EXIT_NOT_FOUND = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('outcome', help="look up commands' outcomes by id in the shard journals")
    p.add_argument('command_ids', nargs='+', metavar='ID', help='command ids (from fleetctl submit)')
    p.add_argument('--shard', action='append', default=[], help='site/shard to ask (repeatable; default: all)')
    p.add_argument('--site', action='append', default=[], help='site whose shards to ask (repeatable)')
    p.add_argument(
        '--timeout',
        type=float,
        default=DISCOVERY_WAIT_SEC,
        help='seconds to wait for the shard leaders to be discovered and answer',
    )
    p.add_argument('--json', action='store_true', help='one JSON object per command')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UsageError(f'--timeout must be > 0, got {args.timeout}')
    try:
        fleet = load_config(args.config)
        sites = args.site or ([] if args.shard else list(fleet.sites))
        keys = list(route_targets(fleet, shards=args.shard, sites=sites))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    ids = list(dict.fromkeys(args.command_ids))
    client = FleetClient('fleetctl_outcome')
    try:
        replies = outcomes_of(client, keys, ids, args.timeout)
    finally:
        client.close()
    if not replies:
        print(f'fleetctl outcome: no shard leader answered within {args.timeout:.0f}s', file=sys.stderr)
        return EXIT_FAILED
    best: dict[str, tuple[int, Any]] = {}
    for reply in replies:
        for cid, state, outcome in zip(ids, reply.states, reply.outcomes, strict=False):
            if state > best.get(cid, (-1, None))[0]:
                best[cid] = (state, outcome)
    rows = []
    for cid in ids:
        state, msg = best.get(cid, (int(CommandState.UNKNOWN), None))
        row: dict[str, object] = {'command_id': cid, 'state': CommandState(state).name}
        if msg is not None and state != CommandState.UNKNOWN:
            row['agent'] = msg.agent_id
        if msg is not None and state == CommandState.FINISHED:
            row.update(
                outcome=Outcome(msg.outcome).name,
                attempts=msg.attempts,
                latency_ms=round(msg.latency_ms, 1),
                detail=msg.detail,
            )
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f'{"COMMAND":<38} {"AGENT":<12} {"STATE":<9} {"OUTCOME":<10} DETAIL')
        for row in rows:
            print(
                f'{row["command_id"]:<38} {row.get("agent", "-"):<12} {row["state"]:<9} '
                f'{row.get("outcome", "-"):<10} {row.get("detail", "")}'
            )
    unknown = sum(1 for row in rows if row['state'] == 'UNKNOWN')
    if unknown:
        print(f'{unknown} command(s) unknown to every shard asked (never accepted, or past retention)', file=sys.stderr)
    return EXIT_OK if not unknown else EXIT_NOT_FOUND

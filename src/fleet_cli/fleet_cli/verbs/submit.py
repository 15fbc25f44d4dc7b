"""fleetctl submit: one command to agents, shards or sites; progress as outcomes arrive, then a table.

Each shard's submission carries a request_id (a uuid, or --request-id): when no leader answers in time (a
failover), the same request is sent again, and a leader that already accepted it answers with the same commands.
Outcomes missed on the outcome topic are asked from the leaders' journals (GetOutcomes) before the table."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TextIO

from fleet_cli import inputs
from fleet_cli.client import ClientTimeout, FleetClient, load_config
from fleet_cli.main import EXIT_FAILED, EXIT_OK, UsageError
from fleet_cli.shard_calls import outcomes_of, submit_idempotent
from fleet_core import topics
from fleet_core.config import ConfigError
from fleet_core.kinds import InvalidCommand, KindRegistry
from fleet_core.model import Outcome, Priority
from fleet_core.routing import route_targets
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes
from fleet_interfaces.srv import GetOutcomes, SubmitCommand
from fleet_ros import qos

OUTCOME_WAIT_GRACE_SEC = 3.0
QUERY_TIMEOUT_SEC = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('submit', help='send one command to agents, shards or sites and wait for outcomes')
    p.add_argument('--agents', default='', help='comma-separated agent ids')
    p.add_argument('--shard', action='append', default=[], help='site/shard (repeatable): every agent of it')
    p.add_argument('--site', action='append', default=[], help='site (repeatable): every agent of it')
    p.add_argument('--kind', required=True, help='command kind, e.g. noop, goto, dock, stop')
    p.add_argument('--args', default='{}', help='arguments as a JSON object, e.g. \'{"x": 1, "y": 2}\'')
    p.add_argument('--arg', action='append', default=[], metavar='KEY=VALUE', help='one argument (JSON value)')
    p.add_argument('--priority', default='NORMAL', type=str.upper, choices=[p.name for p in Priority])
    p.add_argument('--ttl', type=inputs.seconds, default=30.0, help='seconds until the deadline (> 0)')
    p.add_argument('--no-wait', action='store_true', help='return after the orchestrators accepted it')
    p.add_argument('--json', action='store_true', help='print the outcome table as JSON lines')
    p.add_argument(
        '--request-id',
        default='',
        help='idempotency key (default: a new uuid); running the same submit again with it returns the same commands',
    )
    p.add_argument(
        '--submit-timeout',
        type=float,
        default=30.0,
        help='seconds to keep re-sending the request until a shard leader answers (failover)',
    )
    p.set_defaults(func=run)


@dataclass
class Tracker:
    expected: dict[str, str]  # command_id -> agent_id
    outcomes: dict[str, CommandOutcome]

    def on_outcomes(self, batch: CommandOutcomes) -> None:
        for msg in batch.outcomes:
            self.outcomes.setdefault(msg.command_id, msg)

    def done(self) -> bool:
        return all(cid in self.outcomes for cid in self.expected)

    def counts(self) -> Counter[str]:
        return Counter(Outcome(m.outcome).name for cid, m in self.outcomes.items() if cid in self.expected)


def _progress(tracker: Tracker, total: int, stream: TextIO) -> None:
    counts = tracker.counts()
    done = sum(counts.values())
    width = 30
    filled = int(width * done / max(1, total))
    summary = ' '.join(f'{k.lower()}={v}' for k, v in sorted(counts.items()))
    print(f'\r[{"#" * filled}{"." * (width - filled)}] {done}/{total} {summary}', end='', file=stream, flush=True)


def run(args: argparse.Namespace) -> int:
    args_json = inputs.command_args_json(args.args, args.arg)
    priority = Priority[args.priority]
    try:
        KindRegistry().validate(args.kind, args_json, priority)
        fleet = load_config(args.config)
        inputs.check_ttl(args.ttl, fleet)
        agents = [a for a in args.agents.split(',') if a]
        routed = route_targets(fleet, agents=agents, shards=args.shard, sites=args.site)
    except (InvalidCommand, ConfigError) as exc:
        raise UsageError(str(exc)) from None

    base_id = args.request_id or str(uuid.uuid4())
    client = FleetClient()
    tracker = Tracker({}, {})
    repeated = False
    try:
        for site, shard in routed:
            client.node.create_subscription(
                CommandOutcomes, topics.shard_outcome(site, shard), tracker.on_outcomes, qos.EVENTS
            )
        for (site, shard), shard_agents in routed.items():
            request = SubmitCommand.Request(
                agent_ids=shard_agents,
                kind=args.kind,
                args_json=args_json,
                priority=int(priority),
                ttl_sec=args.ttl,
                request_id=base_id if len(routed) == 1 else f'{base_id}@{site}/{shard}',
            )
            reply = submit_idempotent(client, (site, shard), request, args.submit_timeout)
            if not reply.accepted:
                print(f'fleetctl submit: {site}/{shard} refused: {reply.error}', file=sys.stderr)
                return EXIT_FAILED
            if reply.duplicate:
                repeated = True
                print(f'{site}/{shard}: request {request.request_id} accepted before: same commands', file=sys.stderr)
            tracker.expected.update(zip(reply.command_ids, reply.agent_ids_out, strict=True))
        if repeated:
            _ask_journals(client, list(routed), tracker)  # decided before this run listened
        total = len(tracker.expected)
        print(f'submitted {total} command(s) to {len(routed)} shard(s) as request {base_id}', file=sys.stderr)
        if args.no_wait:
            for command_id, agent in tracker.expected.items():
                print(f'{agent}\t{command_id}')
            return EXIT_OK
        deadline = time.monotonic() + args.ttl + fleet.dispatch.deadline_grace_sec + OUTCOME_WAIT_GRACE_SEC
        interactive = sys.stderr.isatty()
        while not tracker.done() and time.monotonic() < deadline:
            client.spin(0.1)
            if interactive:
                _progress(tracker, total, sys.stderr)
        if not tracker.done():
            _ask_journals(client, list(routed), tracker)
        if interactive:
            _progress(tracker, total, sys.stderr)
            print(file=sys.stderr)
    except ClientTimeout as exc:
        print(f'fleetctl submit: {exc}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    return _report(tracker, args.json)


def _ask_journals(client: FleetClient, keys: list[tuple[str, str]], tracker: Tracker) -> None:
    """Outcomes announced while this client was not listening (e.g. during a failover) are in the journals."""
    missing = [cid for cid in tracker.expected if cid not in tracker.outcomes]
    for reply in outcomes_of(client, keys, missing, QUERY_TIMEOUT_SEC):
        for cid, state, outcome in zip(missing, reply.states, reply.outcomes, strict=False):
            if state == GetOutcomes.Request.STATE_FINISHED:
                tracker.outcomes.setdefault(cid, outcome)


def _report(tracker: Tracker, as_json: bool) -> int:
    rows = []
    for command_id, agent in sorted(tracker.expected.items(), key=lambda item: item[1]):
        msg = tracker.outcomes.get(command_id)
        outcome = Outcome(msg.outcome).name if msg else 'UNKNOWN'
        rows.append(
            {
                'agent': agent,
                'command_id': command_id,
                'outcome': outcome,
                'attempts': msg.attempts if msg else 0,
                'latency_ms': round(msg.latency_ms, 1) if msg else None,
                'detail': msg.detail if msg else 'no outcome seen (orchestrator unreachable?)',
            }
        )
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f'{"AGENT":<16} {"OUTCOME":<10} {"TRIES":>5} {"LATENCY":>9}  COMMAND / DETAIL')
        for row in rows:
            latency = f'{row["latency_ms"]:.1f}ms' if row['latency_ms'] is not None else '-'
            print(
                f'{row["agent"]:<16} {row["outcome"]:<10} {row["attempts"]:>5} {latency:>9}  '
                f'{row["command_id"]} {row["detail"]}'
            )
        counts = Counter(str(r['outcome']) for r in rows)
        print('total: ' + ', '.join(f'{k}={v}' for k, v in sorted(counts.items())))
    return EXIT_OK if rows and all(r['outcome'] == 'SUCCEEDED' for r in rows) else EXIT_FAILED

"""fleetctl status: one row per shard from its latched ShardStatus (leader, epoch, health, queues, latency, level,
standbys caught up)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from functools import partial

from fleet_cli.client import DISCOVERY_WAIT_SEC, FleetClient, load_config
from fleet_cli.main import EXIT_FAILED, EXIT_OK, UsageError
from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig
from fleet_interfaces.msg import ShardStatus
from fleet_ros import qos
from fleet_ros.convert import from_time

STATUS_SETTLE_SEC = 2.0
"""A leader publishes its status every half second: a matched status publisher that sent nothing this long after the
match is not a working leader, and its shard is shown as unreachable."""

ShardKey = tuple[str, str]
COLUMNS = (
    ('SHARD', 18),
    ('LEADER', 16),
    ('EPOCH', 5),
    ('ONLINE', 7),
    ('LOST', 4),
    ('Q S/H/N/L', 13),
    ('INFLT', 5),
    ('RETRY', 5),
    ('EXPIRED', 7),
    ('DUPS', 5),
    ('ACK P50', 8),
    ('ACK P99', 8),
    ('LVL', 3),
    ('STANDBY', 7),
    ('SAFE', 4),
    ('AGE', 5),
)
"""STANDBY: standbys caught up with the leader / standbys following it (only caught-up ones may lead at once).
SAFE: agents in safe mode (their heartbeats say why and how to clear it)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('status', help='per-shard table: leader, epoch, agents, queues, latency, degradation')
    p.add_argument('--site', action='append', default=[], help='site(s) to show (default: every site)')
    p.add_argument('--json', action='store_true', help='one JSON object per shard')
    p.set_defaults(func=run)


def shard_keys(fleet: FleetConfig, sites: Sequence[str]) -> list[ShardKey]:
    """Raises UsageError for an unknown site."""
    try:
        return [(s.site_id, s.shard_id) for site in (sites or fleet.sites) for s in fleet.shards_of(site)]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def queue_depth(msg: ShardStatus) -> dict[str, int]:
    """The shard's queue depth by priority name."""
    return dict(zip(('LOW', 'NORMAL', 'HIGH', 'SAFETY'), map(int, msg.queue_depth), strict=True))


class StatusBoard:
    """The newest ShardStatus of each shard, as JSON rows or a table."""

    def __init__(self, keys: Sequence[ShardKey], latest: Mapping[ShardKey, ShardStatus] | None = None) -> None:
        self.keys = list(keys)
        self.latest: dict[ShardKey, ShardStatus] = dict(latest or {})

    def follow(self, client: FleetClient) -> None:
        """Keep the newest status of each shard as the client spins (latched: a new subscriber gets the last one)."""
        for key in self.keys:
            client.node.create_subscription(
                ShardStatus, topics.shard_status(*key), partial(self.latest.__setitem__, key), qos.LATCHED
            )

    def complete(self) -> bool:
        return len(self.latest) == len(self.keys)

    def row(self, key: ShardKey, now: float) -> dict[str, object]:
        msg = self.latest.get(key)
        if msg is None:
            return {'shard': f'{key[0]}/{key[1]}', 'reachable': False}
        return {
            'shard': f'{key[0]}/{key[1]}',
            'reachable': True,
            'leader': msg.leader_id,
            'epoch': msg.epoch,
            'agents_total': msg.agents_total,
            'agents_online': msg.agents_online,
            'agents_lost': msg.agents_lost,
            'lost_agent_ids': list(msg.lost_agent_ids),
            'queue_depth': queue_depth(msg),
            'in_flight': msg.in_flight,
            'submitted': msg.submitted,
            'succeeded': msg.succeeded,
            'failed': msg.failed,
            'expired': msg.expired,
            'rejected': msg.rejected,
            'shed': msg.shed,
            'retries': msg.retries,
            'duplicates_suppressed': msg.duplicates_suppressed,
            'ack_latency_p50_ms': round(msg.ack_latency_p50_ms, 1),
            'ack_latency_p99_ms': round(msg.ack_latency_p99_ms, 1),
            'degradation_level': msg.degradation_level,
            'standbys_following': msg.standbys_following,
            'standbys_caught_up': msg.standbys_caught_up,
            'safe_mode_agents': msg.safe_mode_agents,
            'age_s': round(max(0.0, now - from_time(msg.stamp)), 1),
        }

    def table(self, now: float) -> list[str]:
        lines = [' '.join(f'{name:<{width}}' for name, width in COLUMNS).rstrip()]
        for key in self.keys:
            r = self.row(key, now)
            if not r['reachable']:
                lines.append(f'{r["shard"]:<18} (no status: no leader reachable)')
                continue
            q = queue_depth(self.latest[key])
            cells = [
                r['shard'],
                str(r['leader'])[:16],
                r['epoch'],
                f'{r["agents_online"]}/{r["agents_total"]}',
                r['agents_lost'],
                f'{q["SAFETY"]}/{q["HIGH"]}/{q["NORMAL"]}/{q["LOW"]}',
                r['in_flight'],
                r['retries'],
                r['expired'],
                r['duplicates_suppressed'],
                f'{r["ack_latency_p50_ms"]}ms',
                f'{r["ack_latency_p99_ms"]}ms',
                r['degradation_level'],
                f'{r["standbys_caught_up"]}/{r["standbys_following"]}',
                r['safe_mode_agents'],
                f'{r["age_s"]}s',
            ]
            lines.append(' '.join(f'{c!s:<{w}}' for c, (_n, w) in zip(cells, COLUMNS, strict=True)).rstrip())
        return lines


def read_status(client: FleetClient, keys: Sequence[ShardKey]) -> StatusBoard:
    """Each shard's latched status, waiting on discovery and match rather than a fixed time."""
    latest = client.latest_per_shard(
        ShardStatus, topics.shard_status, keys, qos.LATCHED, DISCOVERY_WAIT_SEC, settle=STATUS_SETTLE_SEC
    )
    return StatusBoard(keys, latest)


def run(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    keys = shard_keys(fleet, args.site)
    client = FleetClient('fleetctl_status')
    try:
        board = read_status(client, keys)
    finally:
        client.close()
    now = time.time()
    if args.json:
        for key in keys:
            print(json.dumps(board.row(key, now)))
    else:
        print('\n'.join(board.table(now)))
    return EXIT_OK if board.complete() else EXIT_FAILED

"""`fleetctl replay FILE.mcap`: re-run a recorded shard through the pure dispatcher and compare its decisions."""

from __future__ import annotations

import argparse
import os
import sys

from fleet_core.config import DEFAULT_CONFIG_ENV, ConfigError, DispatchSettings, FleetConfig, load_fleet_config
from fleet_observability.recorder import RecordingError, read_recording
from fleet_observability.replay import ReplayError, replay_shard
from fleet_observability.replay_loader import load_shard_recordings

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        'replay', help='replay a recording through the dispatcher and check its decisions match the recorded ones'
    )
    parser.add_argument('file', help='MCAP recording made with `fleetctl record` (needs /fleet/** and /*/*/command)')
    parser.add_argument('--seed', type=int, default=0, help="the orchestrator's retry_jitter_seed parameter")
    parser.add_argument('--shard', default=None, help='only this shard, as SITE/SHARD')
    parser.set_defaults(func=run)


def _fleet(args: argparse.Namespace) -> FleetConfig | None:
    path = getattr(args, 'config', None) or os.environ.get(DEFAULT_CONFIG_ENV)
    return load_fleet_config(path) if path else None


def run(args: argparse.Namespace) -> int:
    try:
        fleet = _fleet(args)
        shards = load_shard_recordings(read_recording(args.file))
    except (RecordingError, ConfigError) as exc:
        print(f'fleetctl replay: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    settings = fleet.dispatch if fleet is not None else DispatchSettings()
    if fleet is None:
        print('fleetctl replay: no --config: using default dispatch settings', file=sys.stderr)
    selected = {k: v for k, v in shards.items() if v.journal}
    if args.shard:
        site, _, shard = args.shard.partition('/')
        selected = {k: v for k, v in selected.items() if k == (site, shard)}
    if not selected:
        print(
            f'fleetctl replay: error: {args.file} has no shard journal to replay '
            '(record with the default topics: /fleet/** and /*/*/command)',
            file=sys.stderr,
        )
        return EXIT_USAGE
    all_ok = True
    for (site, shard_id), rec in sorted(selected.items()):
        agents = None
        if fleet is not None:
            try:
                agents = fleet.shard(site, shard_id).agents
            except ConfigError:
                agents = None
        try:
            reports = replay_shard(rec, settings=settings, agents=agents, seed=args.seed)
        except ReplayError as exc:
            print(f'fleetctl replay: error: {exc}', file=sys.stderr)
            return EXIT_USAGE
        for report in reports:
            print(report.render())
            all_ok = all_ok and report.ok
    print('replay: all decisions match' if all_ok else 'replay: decisions DIFFER from the recording')
    return EXIT_OK if all_ok else EXIT_MISMATCH

"""`fleetctl trace <command_id>`: the command's hop timeline, live from /fleet/*/*/trace or from a recording.

Live, a command that was not sampled (or whose hops went by before this listened) still shows submit -> outcome
from the shard journals (GetOutcomes), for as long as they retain it."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rclpy.serialization import deserialize_message

from fleet_cli import inputs
from fleet_cli.client import ClientTimeout, FleetClient, load_config
from fleet_cli.shard_calls import outcomes_of
from fleet_core import topics
from fleet_core.config import ConfigError
from fleet_core.model import Outcome
from fleet_core.shard_journal import CommandState
from fleet_core.trace import Hop, TraceError, TraceRecord, build_timeline, render_timeline
from fleet_interfaces.msg import TraceEvent
from fleet_observability.discovery import RawTopicFollower
from fleet_observability.recorder import RecordingError, read_recording
from fleet_observability.session import ros_session
from fleet_observability.topic_match import GlobError, TopicSelector
from fleet_ros.trace_msgs import trace_from_msg

DEFAULT_TRACE_GLOB = topics.shards_glob(topics.TRACE)
JOURNAL_QUERY_SEC = 5.0
TRACE_SCHEMA = 'fleet_interfaces/msg/TraceEvent'
EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser('trace', help="print a command's hop timeline with per-hop latency")
    parser.add_argument(
        'command_id', type=inputs.command_id, help='the command id (from `fleetctl submit` or an outcome)'
    )
    parser.add_argument('--from', dest='source', default=None, help='read TraceEvents from this MCAP recording')
    parser.add_argument(
        '--wait',
        type=inputs.seconds,
        default=3.0,
        help='live: seconds to listen (stops once SUBMIT and OUTCOME were both seen)',
    )
    parser.add_argument('--topic', default=DEFAULT_TRACE_GLOB, help=f'live: trace topic glob ({DEFAULT_TRACE_GLOB})')
    parser.set_defaults(func=run)


def _records_from_file(path: str) -> list[Any]:

    records = []
    for message in read_recording(path):
        if message.schema_name == TRACE_SCHEMA:
            records.append(trace_from_msg(message.decode()))
    return records


def _whole_life_seen(records: list[Any]) -> bool:
    """An OUTCOME arrived after a SUBMIT: hops arrive in causal order, so listening longer adds nothing."""
    submit_at = next((i for i, r in enumerate(records) if r.hop == Hop.SUBMIT), None)
    return submit_at is not None and any(r.hop == Hop.OUTCOME for r in records[submit_at + 1 :])


def _records_live(command_id: str, glob: str, wait: float) -> list[Any]:

    records: list[Any] = []

    def on_message(_topic: Any, data: bytes) -> None:
        msg = deserialize_message(data, TraceEvent)
        if msg.command_id == command_id:
            records.append(trace_from_msg(msg))

    with ros_session('fleetctl_trace') as session:
        follower = RawTopicFollower(session.node, TopicSelector(include=(glob,)), on_message)
        try:
            follower.poll()
            session.node.create_timer(0.2, follower.poll)
            session.spin_until(time.monotonic() + wait, done=lambda: _whole_life_seen(records))
        finally:
            follower.close()
    return records


def _records_from_journals(command_id: str, config: str | None, seen: list[Any]) -> list[TraceRecord]:
    """SUBMIT and OUTCOME of a decided command from the journal of whichever shard leader knows it (none when the
    fleet config is missing, no leader answers or the command is unknown or still pending)."""
    try:
        fleet = load_config(config)
        keys = [(s.site_id, s.shard_id) for site in fleet.sites for s in fleet.shards_of(site)]
    except ConfigError:
        return []
    client = FleetClient('fleetctl_trace_journal')
    try:
        replies = outcomes_of(client, keys, [command_id], JOURNAL_QUERY_SEC)
    except ClientTimeout:
        replies = []
    finally:
        client.close()
    found = next((r for r in replies if list(r.states) == [CommandState.FINISHED]), None)
    if found is None:
        return []
    msg = found.outcomes[0]
    decided = msg.stamp.sec + msg.stamp.nanosec / 1e9
    node = f'journal of {found.leader_id}'
    have = {r.hop for r in seen}
    records = []
    if Hop.SUBMIT not in have:
        submitted = decided - msg.latency_ms / 1000.0
        records.append(TraceRecord(command_id, msg.trace_id, msg.agent_id, msg.shard_id, node, Hop.SUBMIT, submitted))
    if Hop.OUTCOME not in have:
        records.append(
            TraceRecord(
                command_id,
                msg.trace_id,
                msg.agent_id,
                msg.shard_id,
                node,
                Hop.OUTCOME,
                decided,
                msg.attempts,
                Outcome(msg.outcome).name,
                msg.detail,
            )
        )
    return records


def run(args: argparse.Namespace) -> int:

    try:
        if args.source:
            records = _records_from_file(args.source)
            where = args.source
        else:
            if args.wait <= 0:
                print('fleetctl trace: error: --wait must be > 0', file=sys.stderr)
                return EXIT_USAGE
            records = _records_live(args.command_id, args.topic, args.wait)
            where = f'{args.topic} during {args.wait:.1f}s'
            if not _whole_life_seen(records):
                records += _records_from_journals(args.command_id, args.config, records)
                where += ' and the shard journals'
    except (RecordingError, GlobError) as exc:
        print(f'fleetctl trace: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    try:
        timeline = build_timeline(records, args.command_id)
    except TraceError as exc:
        print(f'fleetctl trace: {exc} in {where}', file=sys.stderr)
        return EXIT_NOT_FOUND
    print(render_timeline(timeline))
    return EXIT_OK

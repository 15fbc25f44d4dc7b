"""`fleetctl record -o FILE.mcap`: record fleet topics (ros2msg schemas, CDR as received) until Ctrl-C or --duration."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fleet_observability.recorder import FleetRecorder, McapFleetWriter
from fleet_observability.session import ros_session
from fleet_observability.topic_match import GlobError, TopicSelector

DEFAULT_GLOBS = ('/fleet/**', '/*/*/odom', '/*/*/command')
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser('record', help='record fleet topics to an MCAP file (opens in Foxglove)')
    parser.add_argument('-o', '--output', required=True, help='MCAP file to write')
    parser.add_argument(
        '--topic', action='append', dest='topics', help=f'topic glob (default: {" ".join(DEFAULT_GLOBS)})'
    )
    parser.add_argument('--duration', type=float, default=None, help='seconds to record (default: until Ctrl-C)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing file')
    parser.add_argument('--discovery-period', type=float, default=0.5, help='seconds between topic discovery scans')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    output = Path(args.output)
    if output.exists() and not args.force:
        print(f'fleetctl record: error: {output} exists (pass --force to overwrite)', file=sys.stderr)
        return EXIT_USAGE
    if args.duration is not None and args.duration <= 0:
        print('fleetctl record: error: --duration must be > 0', file=sys.stderr)
        return EXIT_USAGE
    try:
        selector = TopicSelector(include=tuple(args.topics or DEFAULT_GLOBS))
    except GlobError as exc:
        print(f'fleetctl record: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    try:
        writer = McapFleetWriter(output)
    except OSError as exc:
        print(f'fleetctl record: error: cannot write {output}: {exc.strerror}', file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    with ros_session('fleetctl_record') as session:
        recorder = FleetRecorder(session.node, selector, writer)
        try:
            recorder.poll()
            session.node.create_timer(args.discovery_period, recorder.poll)
            print(f'recording {", ".join(selector.include)} to {output} (Ctrl-C to stop)', file=sys.stderr, flush=True)
            deadline = None if args.duration is None else started + args.duration
            session.spin_until(deadline)
        finally:
            recorder.close()
    elapsed = time.monotonic() - started
    total = sum(writer.counts.values())
    print(f'wrote {total} messages on {len(writer.counts)} topics in {elapsed:.1f}s to {output}')
    for topic, count in sorted(writer.counts.items()):
        print(f'  {count:>8}  {topic}')
    return EXIT_OK

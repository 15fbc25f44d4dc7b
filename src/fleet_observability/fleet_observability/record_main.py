"""The MCAP recording program: `fleet_record` (console script) and `fleetctl record` share its arguments and run.
Records fleet topics (ros2msg schemas, CDR as received) until Ctrl-C or --duration."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fleet_core import topics
from fleet_observability.recorder import FleetRecorder, McapFleetWriter
from fleet_observability.session import ros_session
from fleet_observability.topic_match import DEFAULT_TOPIC_GLOBS, GlobError, TopicSelector

DEFAULT_GLOBS = (*DEFAULT_TOPIC_GLOBS, *topics.agents_globs(topics.AGENT_CONTROL_TOPICS))
"""The Foxglove defaults plus the agents' commands (what `fleetctl replay` needs besides the shard journal)."""
EXIT_OK, EXIT_USAGE = 0, 2
DRAIN_SEC = 0.3
"""After Ctrl-C, messages that already reached the recorder are still written for this long."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('-o', '--output', required=True, help='MCAP file to write')
    parser.add_argument(
        '--topic', action='append', dest='topics', help=f'topic glob (default: {" ".join(DEFAULT_GLOBS)})'
    )
    parser.add_argument('--duration', type=float, default=None, help='seconds to record (default: until Ctrl-C)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing file')
    parser.add_argument('--discovery-period', type=float, default=0.5, help='seconds between topic discovery scans')


def record(args: argparse.Namespace, prog: str) -> int:
    """Validates the arguments (one line on stderr and EXIT_USAGE when they are wrong), then records."""
    output = Path(args.output)
    if output.exists() and not args.force:
        print(f'{prog}: error: {output} exists (pass --force to overwrite)', file=sys.stderr)
        return EXIT_USAGE
    if args.duration is not None and not args.duration > 0:
        print(f'{prog}: error: --duration must be > 0', file=sys.stderr)
        return EXIT_USAGE
    if not args.discovery_period > 0:
        print(f'{prog}: error: --discovery-period must be > 0', file=sys.stderr)
        return EXIT_USAGE
    try:
        selector = TopicSelector(include=tuple(args.topics or DEFAULT_GLOBS))
    except GlobError as exc:
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    try:
        writer = McapFleetWriter(output)
    except OSError as exc:
        print(f'{prog}: error: cannot write {output}: {exc.strerror}', file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    with ros_session(prog.replace(' ', '_')) as session:
        recorder = FleetRecorder(session.node, selector, writer)
        try:
            recorder.poll()
            session.node.create_timer(args.discovery_period, recorder.poll)
            print(f'recording {", ".join(selector.include)} to {output} (Ctrl-C to stop)', file=sys.stderr, flush=True)
            deadline = None if args.duration is None else started + args.duration
            session.spin_until(deadline)
            session.drain(DRAIN_SEC)
        finally:
            recorder.close()
    elapsed = time.monotonic() - started
    total = sum(writer.counts.values())
    print(f'wrote {total} messages on {len(writer.counts)} topics in {elapsed:.1f}s to {output}')
    for topic, count in sorted(writer.counts.items()):
        print(f'  {count:>8}  {topic}')
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='fleet_record', description=__doc__)
    add_arguments(parser)
    return record(parser.parse_args(argv), 'fleet_record')


if __name__ == '__main__':
    sys.exit(main())

"""`fleetctl record -o FILE.mcap`: record fleet topics (ros2msg schemas, CDR as received) until Ctrl-C or --duration.
The program itself is fleet_observability.record_main (also the `fleet_record` console script)."""

from __future__ import annotations

import argparse

from fleet_observability import record_main


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser('record', help='record fleet topics to an MCAP file (opens in Foxglove)')
    record_main.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return record_main.record(args, 'fleetctl record')

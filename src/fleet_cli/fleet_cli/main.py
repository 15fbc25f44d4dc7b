"""fleetctl entry point: parses the verb and hands over to its module in fleet_cli.verbs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fleet_cli.inputs import EXIT_USAGE, FleetArgumentParser, UsageError
from fleet_cli.verbs import VERBS

__all__ = ['EXIT_FAILED', 'EXIT_OK', 'EXIT_USAGE', 'UsageError', 'build_parser', 'main']

EXIT_OK = 0
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    """Every verb's parser is a FleetArgumentParser too (argparse builds subparsers with the parent's class)."""
    parser = FleetArgumentParser(prog='fleetctl', description='Operate a fleetlanes fleet.')
    parser.add_argument(
        '--config', default=None, help='fleet layout YAML (default: $FLEETLANES_CONFIG or config/fleet.yaml)'
    )
    subparsers = parser.add_subparsers(dest='verb', metavar='VERB', required=True)
    for verb in VERBS:
        try:
            module = importlib.import_module(f'fleet_cli.verbs.{verb}')
        except ModuleNotFoundError as exc:
            if exc.name != f'fleet_cli.verbs.{verb}':
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f'fleetctl {args.verb}: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())

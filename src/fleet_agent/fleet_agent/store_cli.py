"""`fleet_agent_store`: inspect an agent host's dedup store, and clear the safe mode a damaged store put it in.

    fleet_agent_store check STORE            # exit 0 when whole, 1 when it lost started commands (safe mode)
    fleet_agent_store clear-safe-mode STORE  # record the lost commands as FAILED (never re-run), empty the guard

Run it with the agent stopped (the store is `<store_dir>/<host_name>.sqlite`), then start the agent again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fleet_core.dedup_store import DedupDatabase, StoreUnavailable

EXIT_OK, EXIT_LOST, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='fleet_agent_store', description=__doc__.split('\n')[0] if __doc__ else '')
    parser.add_argument('action', choices=('check', 'clear-safe-mode'))
    parser.add_argument('store', type=Path, help='the host dedup store, <store_dir>/<host_name>.sqlite')
    args = parser.parse_args(argv)
    if not args.store.is_file():
        print(f'fleet_agent_store: error: no store at {args.store}', file=sys.stderr)
        return EXIT_USAGE
    try:
        database = DedupDatabase(args.store)
    except StoreUnavailable as exc:
        print(f'fleet_agent_store: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    try:
        lost = [(a, c, s) for a, by_id in sorted(database.lost.items()) for c, s in sorted(by_id.items())]
        if args.action == 'check':
            for agent, command_id, seq in lost:
                print(f'lost: agent {agent} command {command_id} seq {seq}')
            print(f'{args.store}: ' + (f'{len(lost)} lost started command(s): SAFE MODE' if lost else 'whole'))
            return EXIT_LOST if lost else EXIT_OK
        try:
            cleared = database.clear_lost()
        except StoreUnavailable as exc:
            print(f'fleet_agent_store: error: {exc}', file=sys.stderr)
            return EXIT_USAGE
        for agent, command_id, seq in cleared:
            print(f'recorded FAILED (never re-run): agent {agent} command {command_id} seq {seq}')
        print(f'{args.store}: safe mode cleared ({len(cleared)} command(s) recorded); restart the agent')
        return EXIT_OK
    finally:
        database.close()


if __name__ == '__main__':
    sys.exit(main())

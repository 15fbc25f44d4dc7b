"""Cost of the agent store's durability: one group commit of a loop turn in which `--agents` hosted agents each start
a command (what a fan-out does to a simulator host), for `durability` normal and full, with the start guard (its
append + fsync after the SQLite commit) and without it (the guard's sync skipped, for comparison only).

    python bench/agent_store.py [--agents 500] [--turns 40]

Prints one JSON line per variant: commit latency p50/p99 (ms) over the turns."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import percentile

from fleet_core.dedup_store import DedupDatabase, DedupStore
from fleet_core.model import Command, Priority


class _NoGuard(DedupDatabase):
    """The baseline: the guard's lines are dropped instead of written and fsynced."""

    def _sync_guard(self) -> None:
        self._guard_queue = []


def run(variant: str, durability: str, agents: int, turns: int, directory: Path) -> dict[str, object]:
    cls = DedupDatabase if variant == 'guard' else _NoGuard
    database = cls(directory / f'{variant}-{durability}.sqlite', durability=durability, group_commit=True)
    stores = [DedupStore(database, f'r{i:04d}') for i in range(agents)]
    latencies: list[float] = []
    for turn in range(1, turns + 1):
        now = time.time()
        for store in stores:
            store.begin(
                Command(
                    f'{store.agent_id}-{turn}',
                    't',
                    's',
                    'z',
                    store.agent_id,
                    turn,
                    1,
                    Priority.NORMAL,
                    now,
                    now + 60,
                    'noop',
                )
            )
        started = time.perf_counter()
        database.commit()
        latencies.append((time.perf_counter() - started) * 1000.0)
    database.close()
    return {
        'bench': 'agent_store',
        'variant': variant,
        'durability': durability,
        'agents': agents,
        'turns': turns,
        'commit_p50_ms': round(percentile(latencies, 50), 3),
        'commit_p99_ms': round(percentile(latencies, 99), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0] if __doc__ else '')
    parser.add_argument('--agents', type=int, default=500)
    parser.add_argument('--turns', type=int, default=40)
    args = parser.parse_args()
    if not (1 <= args.agents <= 5000 and 1 <= args.turns <= 1000):
        print('agent_store: --agents must be 1..5000 and --turns 1..1000', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix='fleet-agent-store-') as tmp:
        for durability in ('normal', 'full'):
            for variant in ('no_guard', 'guard'):
                print(json.dumps(run(variant, durability, args.agents, args.turns, Path(tmp))), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Cost of the shard orchestrator's journal per fan-out round: accepting one submission of `--agents` commands (the
write the submitter waits for), journaling their deliveries (one transaction before they are published), and their
outcomes as acks arrive in `--batches` flushes, for journal_durability full and normal.

    python bench/shard_journal.py [--agents 500] [--rounds 20] [--batches 20]

Prints one JSON line per durability: p50/p99 (ms) of each part and of the whole round."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import percentile

from fleet_core.model import Command, CommandResult, Outcome, Priority
from fleet_core.shard_journal import ShardJournal


def run(durability: str, agents: int, rounds: int, batches: int) -> dict[str, object]:
    parts: dict[str, list[float]] = {'accept': [], 'deliveries': [], 'outcomes': [], 'round': []}
    with tempfile.TemporaryDirectory(prefix='fleet-journal-bench-') as tmp:
        journal = ShardJournal(Path(tmp) / 'journal.db', durability=durability)
        size = max(1, agents // batches)
        for index in range(rounds):
            now = time.time()
            commands = [
                Command(f'c{index}-{a}', f't{index}', 'bench', 'shard_0', f'r{a:04d}', 0, 101, Priority.NORMAL, now,
                        now + 30.0, 'noop')
                for a in range(agents)
            ]  # fmt: skip
            started = time.perf_counter()
            journal.accept(commands, now=now)
            accepted = time.perf_counter()
            journal.record(sends=[c.with_delivery(seq=index + 1, epoch=101, attempt=1) for c in commands])
            delivered = time.perf_counter()
            results = [
                CommandResult(c.command_id, c.trace_id, c.agent_id, c.shard_id, index + 1, Outcome.SUCCEEDED, 2, 1,
                              10.0, '', now)
                for c in commands
            ]  # fmt: skip
            for start in range(0, agents, size):
                journal.record(results=results[start : start + size])
            done = time.perf_counter()
            parts['accept'].append((accepted - started) * 1000)
            parts['deliveries'].append((delivered - accepted) * 1000)
            parts['outcomes'].append((done - delivered) * 1000)
            parts['round'].append((done - started) * 1000)
        journal.close()
    line: dict[str, object] = {'durability': durability, 'agents': agents, 'rounds': rounds, 'batches': batches}
    for name, values in parts.items():
        line[f'{name}_p50_ms'] = round(percentile(values, 50), 2)
        line[f'{name}_p99_ms'] = round(percentile(values, 99), 2)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--agents', type=int, default=500)
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--batches', type=int, default=20, help='outcome flushes per round (acks batched per 5 ms)')
    args = parser.parse_args()
    for durability in ('full', 'normal'):
        print(json.dumps(run(durability, args.agents, args.rounds, args.batches)), flush=True)


if __name__ == '__main__':
    main()

"""Observability overhead: the fleetlanes fan-out round (bench/fanout.py) with tracing + metrics on versus off,
in the same run, alternating blocks so that drift affects both equally. Prints one JSON line.
Run: python bench/observability_overhead.py [--agents 500] [--rounds 10] (environment active)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import percentile, write_fleet_config
from fanout import SHARD, SITE, Operator, start_agents, start_orchestrator, warm_up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--agents', type=int, default=500)
    parser.add_argument('--rounds', type=int, default=10, help='rounds per block; two blocks per variant')
    parser.add_argument('--delay', type=float, default=0.010)
    parser.add_argument('--metrics-port', type=int, default=0, help='metrics endpoint port when on (0 = any free)')
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='fleet-obs-'))
    config = write_fleet_config(tmp, SITE, {SHARD: args.agents})
    agents = start_agents(config, tmp / 'stores', args.delay)
    operator = Operator(args.agents)
    samples: dict[str, list[float]] = {'on': [], 'off': []}
    try:
        for variant in ('on', 'off', 'on', 'off'):
            enabled = 'true' if variant == 'on' else 'false'
            orchestrator = start_orchestrator(
                config,
                '-p', f'tracing_enabled:={enabled}',
                '-p', f'trace_sample_fraction:={1.0 if variant == "on" else 0.0}',
                '-p', f'metrics_port:={args.metrics_port if variant == "on" else -1}',
            )  # fmt: skip
            try:
                warm_up(operator)
                samples[variant] += [operator.fleet_round() for _ in range(args.rounds)]
            finally:
                orchestrator.stop()
    finally:
        operator.close()
        agents.stop()
    traced = percentile(samples['on'], 50) * 1000
    untraced = percentile(samples['off'], 50) * 1000
    print(
        json.dumps(
            {
                'agents': args.agents,
                'rounds': 2 * args.rounds,
                'trace_sample_fraction': 1.0,
                'traced_p50_ms': round(traced, 1),
                'untraced_p50_ms': round(untraced, 1),
                'overhead_ratio': round(traced / untraced, 3),
            }
        )
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())

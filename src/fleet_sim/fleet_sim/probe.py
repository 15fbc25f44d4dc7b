"""`python -m fleet_sim.probe`: the operator side of a chaos run, meant to run inside the central host. Waits for
leaders and robots, drives the inspection step by step through the submit service while writing progress lines
(leaders, points, online robots) for the test that injects faults, then writes what it observed as one JSON file:
every journaled command with its outcomes, and the lease history."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rclpy.node import Node

from fleet_core.config import FleetConfig, load_fleet_config
from fleet_ros.runtime import RosProgram, run_program
from fleet_sim.layout import home_of, inspection_points
from fleet_sim.observer import FleetObserver
from fleet_sim.plan import RobotPlan, inspection_steps
from fleet_sim.step_driver import StepDriver

TICK_SEC = 0.05
PROGRESS_SEC = 0.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='fleet_sim.probe', description=__doc__)
    parser.add_argument('--config', required=True, help='fleet layout YAML')
    parser.add_argument('--points', type=int, default=2, help='inspection points per robot')
    parser.add_argument('--ttl', type=float, default=20.0, help='deadline of each step (s)')
    parser.add_argument('--progress', type=Path, required=True, help='JSON lines of progress (appended)')
    parser.add_argument('--result', type=Path, required=True, help='JSON file written at the end')
    parser.add_argument('--ready-timeout', type=float, default=60.0, help='seconds to wait for leaders and robots')
    parser.add_argument('--timeout', type=float, default=150.0, help='seconds the mission may take')
    return parser.parse_args(argv)


def leaders_now(observer: FleetObserver) -> dict[str, list[str | int] | None]:
    """Per shard ('site/shard'), the current leader's [leader_id, epoch] (None: no leader yet), for progress lines."""
    return {
        f'{site}/{shard}': [view.leader.leader_id, view.leader.epoch] if view.leader else None
        for (site, shard), view in observer.shards.items()
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    """The run's JSON result, replaced at once (a reader never sees half of it)."""
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(result))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fleet = load_fleet_config(args.config)
    return run_program('fleet_sim.probe', lambda program: _run(program, args, fleet))


def _run(program: RosProgram, args: argparse.Namespace, fleet: FleetConfig) -> int:
    node = program.add_node(Node('chaos_probe', context=program.context))
    observer = FleetObserver(node, fleet)
    mission_id = str(uuid.uuid4())
    plans = {
        agent: RobotPlan(
            agent, inspection_steps(inspection_points(fleet, agent, args.points), home_of(fleet, agent), mission_id)
        )
        for shard in fleet.shards
        for agent in shard.agents
    }
    driver: StepDriver | None = None
    phase = 'waiting'
    started = time.monotonic()
    deadline = started + args.ready_timeout
    next_progress = 0.0
    with args.progress.open('a') as progress:
        while program.running:
            program.spin_for(TICK_SEC)
            now = time.monotonic()
            if phase == 'waiting' and observer.leaders_ready() and observer.online() >= fleet.agent_count:
                phase, deadline = 'running', now + args.timeout
                driver = StepDriver(node, fleet, observer, plans, ttl_sec=args.ttl)
            if driver is not None:
                driver.tick()
                if driver.finished and not observer.unresolved():
                    phase = 'finished'
            if now >= next_progress or phase == 'finished' or now >= deadline:
                next_progress = now + PROGRESS_SEC
                done, total = driver.points() if driver else (0, 0)
                leaders = leaders_now(observer)
                progress.write(
                    json.dumps(
                        {
                            't': round(now - started, 2),
                            'phase': phase,
                            'points_done': done,
                            'points_total': total,
                            'online': observer.online(),
                            'leaders': leaders,
                        }
                    )
                    + '\n'
                )
                progress.flush()
            if phase == 'finished' or now >= deadline:
                break
        program.spin_for(0.5)
        result = {
            'phase': phase,
            'journal': {
                c: {'agent': e.agent_id, 'kind': e.kind, 'trace': e.trace_id} for c, e in observer.journal.items()
            },
            'outcomes': {c: [[o.outcome, o.attempts, o.detail] for o in recs] for c, recs in observer.outcomes.items()},
            'leases': observer.lease_log(),
            'robots_done': driver.robots_done() if driver else 0,
            'robots_failed': driver.robots_failed() if driver else 0,
            'points': list(driver.points()) if driver else [0, 0],
            'duplicates_suppressed': observer.agent_duplicates_suppressed(),
        }
        write_result(args.result, result)
    return 0 if phase == 'finished' or program.stop_requested else 1


if __name__ == '__main__':
    sys.exit(main())

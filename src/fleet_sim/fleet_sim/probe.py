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

import rclpy
from rclpy.context import Context
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from fleet_core.config import load_fleet_config
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fleet = load_fleet_config(args.config)
    context = Context()
    rclpy.init(context=context)
    node = Node('chaos_probe', context=context)
    executor = EventsExecutor(context=context)
    executor.add_node(node)
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
    progress = args.progress.open('a')
    try:
        while context.ok():
            end = time.monotonic() + TICK_SEC
            while (now := time.monotonic()) < end:
                executor.spin_once(timeout_sec=end - now)
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
                leaders = {
                    f'{k[0]}/{k[1]}': [v.leader.leader_id, v.leader.epoch] if v.leader else None
                    for k, v in observer.shards.items()
                }
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
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)
        result = {
            'phase': phase,
            'journal': {
                c: {'agent': e.agent_id, 'kind': e.kind, 'trace': e.trace_id} for c, e in observer.journal.items()
            },
            'outcomes': {c: [[o.outcome, o.attempts, o.detail] for o in recs] for c, recs in observer.outcomes.items()},
            'leases': {
                f'{k[0]}/{k[1]}': [[s.received_at, s.leader_id, s.epoch] for s in v.leases]
                for k, v in observer.shards.items()
            },
            'robots_done': driver.robots_done() if driver else 0,
            'robots_failed': driver.robots_failed() if driver else 0,
            'points': list(driver.points()) if driver else [0, 0],
            'duplicates_suppressed': observer.agent_duplicates_suppressed(),
        }
        tmp = args.result.with_suffix('.tmp')
        tmp.write_text(json.dumps(result))
        tmp.replace(args.result)
    finally:
        progress.close()
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        if context.ok():
            rclpy.shutdown(context=context)
    return 0 if phase == 'finished' else 1


if __name__ == '__main__':
    sys.exit(main())

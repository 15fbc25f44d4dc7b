"""Fan-out benchmark (G4): one command to N agents per round, time until every SUCCEEDED ack, for
(a) fleetlanes end to end (operator submit service -> shard orchestrator -> agents -> outcomes),
(b) a bare rclpy publish/ack loop over the same number of agents (the floor of this stack),
(c) the naive loop "send one, await its ack, next".
Every agent takes the same fixed, non-blocking execution delay in all three variants.
Prints one JSON line. Run: python bench/fanout.py [--agents 500] [--rounds 20] (environment active)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Child, percentile, python_child, write_fleet_config
from rclpy.node import Node

from fleet_core import topics
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck, CommandOutcome, CommandOutcomes
from fleet_interfaces.srv import SubmitCommand
from fleet_ros import qos
from fleet_ros.runtime import RosProgram, ros_program, run_program

SITE, SHARD = 'bench', 'shard_0'
RAW_PREFIX = '/bench_raw'
SETTLE_SEC = 0.5


def agent_ids(n: int) -> list[str]:
    return [f'{SHARD}_a{i:03d}' for i in range(1, n + 1)]


# ----------------------------------------------------------------------------------------- raw responders


def run_raw_agents(n: int, delay: float) -> int:
    """Bare responders: on each Command, wait `delay` without blocking, then publish one SUCCEEDED ack."""

    def serve(program: RosProgram) -> None:
        node = program.add_node(Node('bench_raw_agents', context=program.context))
        loop = program.loop
        acks = node.create_publisher(CommandAck, f'{RAW_PREFIX}/ack', qos.ACK)

        def reply(msg: CommandMsg) -> None:
            acks.publish(
                CommandAck(command_id=msg.command_id, agent_id=msg.agent_id, seq=msg.seq, status=2, final=True)
            )

        def reply_later(msg: CommandMsg) -> None:
            loop.call_soon_threadsafe(loop.call_later, delay, reply, msg)

        for agent in agent_ids(n):
            node.create_subscription(CommandMsg, f'{RAW_PREFIX}/{agent}/command', reply_later, qos.COMMAND)
        program.run_async()  # the replies run on the loop until SIGINT/SIGTERM

    return run_program('bench_raw_agents', serve, args=[])


# ----------------------------------------------------------------------------------------- operator side


class Operator:
    def __init__(self, n: int) -> None:
        # The bench's in-process client: Ctrl-C stays a KeyboardInterrupt (signals=()); the teardown is the runtime's.
        self._program = contextlib.ExitStack()
        program = self._program.enter_context(ros_program('bench_operator', args=[], signals=()))
        self.context = program.context
        self.executor = program.executor
        self.node = program.add_node(Node('bench_operator', context=self.context))
        self.agents = agent_ids(n)
        self.outcomes: dict[str, int] = {}
        self.details: dict[str, str] = {}
        self.raw_acks: set[str] = set()
        # What the current round still waits for, updated in the callbacks: checking every id after every
        # message would make this client's work quadratic and steal CPU from the processes measured.
        self.waiting: set[str] = set()
        self.node.create_subscription(CommandOutcomes, topics.shard_outcome(SITE, SHARD), self._on_outcomes, qos.EVENTS)
        self.node.create_subscription(CommandAck, f'{RAW_PREFIX}/ack', self._on_raw_ack, qos.ACK)
        self.raw_pubs = {
            a: self.node.create_publisher(CommandMsg, f'{RAW_PREFIX}/{a}/command', qos.COMMAND) for a in self.agents
        }
        self.submit = self.node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))

    def _on_outcomes(self, batch: CommandOutcomes) -> None:
        for msg in batch.outcomes:
            self.outcomes[msg.command_id] = msg.outcome
            if msg.outcome != CommandOutcome.OUTCOME_SUCCEEDED:
                self.details[msg.command_id] = msg.detail
            self.waiting.discard(msg.command_id)

    def _on_raw_ack(self, msg: CommandAck) -> None:
        self.raw_acks.add(msg.command_id)
        self.waiting.discard(msg.command_id)

    def spin_until(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f'benchmark: timed out after {timeout}s waiting for {what}')
            self.executor.spin_once(timeout_sec=0.005)

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self.spin_until(lambda: time.monotonic() >= deadline, seconds + 1.0, 'the settle period')

    def fleet_round(self, ttl: float = 30.0) -> float:
        started = time.perf_counter()
        future = self.submit.call_async(SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=ttl))
        self.spin_until(future.done, 10.0, 'the submit reply')
        reply = future.result()
        if not reply.accepted:
            raise RuntimeError(f'submit refused: {reply.error}')
        ids = list(reply.command_ids)
        self.waiting = {c for c in ids if c not in self.outcomes}
        self.spin_until(lambda: not self.waiting, ttl + 5, 'all outcomes')
        elapsed = time.perf_counter() - started
        bad = collections.Counter(self.outcomes[c] for c in ids if self.outcomes[c] != CommandOutcome.OUTCOME_SUCCEEDED)
        if bad:
            reasons = collections.Counter(self.details.get(c, '') for c in ids if c in self.details)
            raise RuntimeError(f'{sum(bad.values())} command(s) did not succeed: {dict(bad)}, {reasons.most_common(3)}')
        return elapsed

    def raw_round(self) -> float:
        ids = {a: str(uuid.uuid4()) for a in self.agents}
        self.waiting = set(ids.values())
        started = time.perf_counter()
        for agent, cid in ids.items():
            self.raw_pubs[agent].publish(CommandMsg(command_id=cid, agent_id=agent, seq=1, epoch=1, kind='noop'))
        self.spin_until(lambda: not self.waiting, 30.0, 'all raw acks')
        return time.perf_counter() - started

    def _raw_acked(self, command_id: str) -> bool:
        return command_id in self.raw_acks

    def naive_round(self) -> float:
        started = time.perf_counter()
        for agent in self.agents:
            cid = str(uuid.uuid4())
            self.raw_pubs[agent].publish(CommandMsg(command_id=cid, agent_id=agent, seq=1, epoch=1, kind='noop'))
            self.spin_until(partial(self._raw_acked, cid), 10.0, f'the ack of {agent}')
        return time.perf_counter() - started

    def close(self) -> None:
        self._program.close()


def start_orchestrator(config: Path, *extra: str) -> Child:
    ros = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    return Child(['shard_orchestrator', *ros, *extra, '--log-level', 'warn'], 'orchestrator')


def start_agents(config: Path, store_dir: Path, delay: float) -> Child:
    ros = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    return Child(['fleet_agent', *ros, '-p', f'store_dir:={store_dir}', '-p', f'exec_delay_sec:={delay}'], 'agents')


def warm_up(operator: Operator, timeout: float = 60.0) -> None:
    """Until the orchestrator leads and every agent answered once (leadership, discovery, allocations)."""
    operator.spin_until(operator.submit.service_is_ready, 30.0, 'the orchestrator submit service')
    deadline = time.monotonic() + timeout
    while True:
        try:
            operator.fleet_round(ttl=5.0)
            return
        except (RuntimeError, TimeoutError):
            if time.monotonic() > deadline:
                raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--agents', type=int, default=500)
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--naive-rounds', type=int, default=5, help='the naive loop takes agents x delay per round')
    parser.add_argument('--delay', type=float, default=0.010, help='fixed execution time of every agent (s)')
    parser.add_argument('--tracing', choices=['on', 'off'], default='on')
    parser.add_argument('--role', choices=['bench', 'raw-agents'], default='bench', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == 'raw-agents':
        return run_raw_agents(args.agents, args.delay)

    tmp = Path(tempfile.mkdtemp(prefix='fleet-fanout-'))
    # A 3 s lease: this benchmark measures fan-out, not leadership churn when other load starves the leader.
    config = write_fleet_config(tmp, SITE, {SHARD: args.agents}, leadership={'lease_sec': 3.0})
    children: list[Child] = []
    operator = None
    try:
        orchestrator = start_orchestrator(config, '-p', f'tracing_enabled:={args.tracing == "on"}')
        children.append(orchestrator)
        children.append(start_agents(config, tmp / 'stores', args.delay))
        raw_argv = [__file__, '--role', 'raw-agents', '--agents', str(args.agents), '--delay', str(args.delay)]
        children.append(python_child(raw_argv, 'raw'))
        operator = Operator(args.agents)
        operator.spin_until(
            lambda: all(p.get_subscription_count() > 0 for p in operator.raw_pubs.values()), 30.0, 'raw responders'
        )
        warm_up(operator)
        operator.raw_round()
        # Alternate the two variants round by round, so that drift in the machine's load affects both alike, and
        # start every round from a settled system (what a round leaves behind, e.g. trace publishing, is done).
        fleet: list[float] = []
        raw: list[float] = []
        for _ in range(args.rounds):
            operator.settle(SETTLE_SEC)
            fleet.append(operator.fleet_round())
            operator.settle(SETTLE_SEC)
            raw.append(operator.raw_round())
        naive = [operator.naive_round() for _ in range(args.naive_rounds)]
        result = {
            'agents': args.agents,
            'rounds': args.rounds,
            'naive_rounds': args.naive_rounds,
            'delay_ms': args.delay * 1000,
            'tracing': args.tracing,
            'fleet_p50_ms': round(percentile(fleet, 50) * 1000, 1),
            'fleet_p99_ms': round(percentile(fleet, 99) * 1000, 1),
            'raw_p50_ms': round(percentile(raw, 50) * 1000, 1),
            'raw_p99_ms': round(percentile(raw, 99) * 1000, 1),
            'naive_p50_ms': round(percentile(naive, 50) * 1000, 1),
            'naive_p99_ms': round(percentile(naive, 99) * 1000, 1),
            'orchestrator_rss_mb': round(orchestrator.rss_mb(), 1),
        }
        result['fleet_over_raw'] = round(result['fleet_p50_ms'] / result['raw_p50_ms'], 2)
        result['naive_over_fleet'] = round(result['naive_p50_ms'] / result['fleet_p50_ms'], 1)
        print(json.dumps(result))
        return 0
    finally:
        if operator is not None:
            operator.close()
        for child in reversed(children):
            child.stop()


if __name__ == '__main__':
    sys.exit(main())

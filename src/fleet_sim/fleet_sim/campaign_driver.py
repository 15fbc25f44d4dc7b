"""`python -m fleet_sim.campaign_driver`: the operator side of one chaos-campaign seed, run inside the central host.

Waits for a leader on every shard and every robot online, then for the fault window: submits commands through each
shard's submit service with a client request_id (re-sent after a timeout, as fleetctl does, and sometimes re-sent
after it was answered to check that the answer repeats), runs the inspection mission step by step (a new round when
one finishes), and carries out the schedule's events that act on the ROS graph (duplicated and reordered
redeliveries of captured commands; clock skew of a robot host; link cuts in loopback mode). After the rig has
restored every process and link (it creates the `--settled` file), waits until every command the shard accepted
has a decided fate in the leader's journal (GetOutcomes), then writes everything it saw as one JSON file:
submissions, every announced outcome (topic and service), the lease history, idempotency findings."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.task import Future
from std_msgs.msg import String

from fleet_core import topics
from fleet_core.config import FleetConfig, load_fleet_config
from fleet_core.model import Priority
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandOutcome
from fleet_interfaces.srv import GetOutcomes, SubmitCommand
from fleet_ros import qos
from fleet_ros.convert import from_time
from fleet_ros.runtime import RosProgram, run_program
from fleet_sim.campaign import DRIVER_OPS, Event, Schedule
from fleet_sim.execlog import read_records
from fleet_sim.faults import FAULT_TOPIC, Fault
from fleet_sim.layout import home_of, inspection_points
from fleet_sim.observer import FleetObserver
from fleet_sim.plan import RobotPlan, inspection_steps
from fleet_sim.probe import leaders_now, write_result
from fleet_sim.step_driver import StepDriver

TICK_SEC = 0.05
PROGRESS_SEC = 0.25
CALL_TIMEOUT_SEC = 3.0
"""A submit without an answer after this long is re-sent with the same request_id."""
PATIENCE_SEC = 30.0
"""A request still unanswered (or refused with 'retry') after this long is given up."""
RESEND_PAUSE_SEC = 0.5
MAX_OPEN_PER_SHARD = 6
QUERY_PERIOD_SEC = 1.0
QUERY_CHUNK = 100

ShardKey = tuple[str, str]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='fleet_sim.campaign_driver', description=__doc__.split('\n', 1)[0])
    parser.add_argument('--config', required=True, help='fleet layout YAML')
    parser.add_argument('--schedule', type=Path, required=True, help='the seed schedule (JSON, campaign.Schedule)')
    parser.add_argument('--progress', type=Path, required=True, help='JSON lines of progress (appended)')
    parser.add_argument('--result', type=Path, required=True, help='JSON file written at the end')
    parser.add_argument('--settled', type=Path, required=True, help='created by the rig once everything is restored')
    parser.add_argument('--exec-dir', type=Path, required=True, help='directory of the hosts exec-*.jsonl logs')
    parser.add_argument('--loopback-cuts', action='store_true', help='carry out link cuts as simulator faults')
    parser.add_argument('--rate', type=float, default=1.5, help='command submissions per second and shard')
    parser.add_argument('--points', type=int, default=1, help='inspection points per robot per mission round')
    parser.add_argument('--ready-timeout', type=float, default=120.0)
    parser.add_argument('--settle-timeout', type=float, default=60.0)
    parser.add_argument('--drain-timeout', type=float, default=45.0)
    return parser.parse_args(argv)


@dataclass(slots=True)
class OpenRequest:
    """One client request_id: sent until answered; `recheck_at` > 0 sends it once more after the answer."""

    shard: ShardKey
    request: SubmitCommand.Request
    created: float
    sent_at: float = 0.0
    future: Future | None = None
    answer: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    recheck_at: float = 0.0
    tries: int = 0
    not_before: float = 0.0


class Driver:
    def __init__(self, node: Node, fleet: FleetConfig, schedule: Schedule, args: argparse.Namespace) -> None:
        self.node = node
        self.fleet = fleet
        self.schedule = schedule
        self.args = args
        self.rng = random.Random(schedule.seed * 7919 + 1)
        self.observer = FleetObserver(node, fleet)
        self.announcements: list[list[object]] = []
        self.observer.on_outcome.append(self._on_outcome)
        self.submit = {
            (s.site_id, s.shard_id): node.create_client(SubmitCommand, topics.shard_submit(s.site_id, s.shard_id))
            for s in fleet.shards
        }
        self.query = {
            (s.site_id, s.shard_id): node.create_client(GetOutcomes, topics.shard_outcomes_query(s.site_id, s.shard_id))
            for s in fleet.shards
        }
        self.captured: deque[CommandMsg] = deque(maxlen=200)
        self.command_pubs = {}
        for shard in fleet.shards:
            for agent in shard.agents:
                name = topics.agent_command(shard.site_id, agent)
                node.create_subscription(CommandMsg, name, self._capture, qos.COMMAND)
                self.command_pubs[agent] = node.create_publisher(CommandMsg, name, qos.COMMAND)
        self.faults = node.create_publisher(String, FAULT_TOPIC, qos.EVENTS)
        self.requests: list[OpenRequest] = []
        self.answer_ms: list[int] = []
        self.errors: dict[str, int] = {}
        self.submitted: dict[str, str] = {}
        self.findings: list[dict[str, str]] = []
        self.stats = dict.fromkeys(
            (
                'requests',
                'resent',
                'timeouts',
                'queries',
                'queries_unanswered',
                'refused',
                'given_up',
                'rechecked',
                'replayed',
                'faults_sent',
            ),
            0,
        )
        self.mission: StepDriver | None = None
        self.missions = [0, 0]
        self.done_events: set[int] = set()
        self.skew_clear: list[tuple[float, str]] = []
        self.next_submit = 0.0
        self.counter = 0

    # -- streams -----------------------------------------------------------------------------------------

    def _capture(self, msg: CommandMsg) -> None:
        self.captured.append(msg)  # (rclpy cannot inspect a builtin method as a callback)

    def _on_outcome(self, msg: CommandOutcome) -> None:
        self.announcements.append(
            [msg.command_id, msg.agent_id, msg.outcome, msg.detail, from_time(msg.stamp), 'topic']
        )

    # -- mission -----------------------------------------------------------------------------------------

    def start_mission(self) -> None:
        if self.mission is not None:
            self.observer.on_journal.remove(self.mission._on_journal)
            self.observer.on_outcome.remove(self.mission._on_outcome)
        mission_id = str(uuid.uuid4())
        plans = {
            agent: RobotPlan(
                agent,
                inspection_steps(
                    inspection_points(self.fleet, agent, self.args.points), home_of(self.fleet, agent), mission_id
                ),
            )
            for shard in self.fleet.shards
            for agent in shard.agents
        }
        self.mission = StepDriver(self.node, self.fleet, self.observer, plans, ttl_sec=20.0)
        self.missions[1] += 1
        self.stats['mission_rounds'] = self.missions[1]

    def tick_mission(self) -> None:
        """Runs the mission; a finished round (every robot's plan done) is counted and the next one started."""
        if self.mission is None:
            return
        if self.mission.finished:
            self.missions[0] += 1 if self.mission.robots_failed() == 0 else 0
            self.start_mission()
            return
        self.mission.tick()

    # -- commands ----------------------------------------------------------------------------------------

    def new_requests(self, now: float) -> None:
        if now < self.next_submit:
            return
        self.next_submit = now + 1.0 / max(0.1, self.args.rate)
        for shard in self.fleet.shards:
            key = (shard.site_id, shard.shard_id)
            if sum(1 for r in self.requests if r.shard == key and r.answer is None) >= MAX_OPEN_PER_SHARD:
                continue
            self.counter += 1
            agents = self.rng.sample(list(shard.agents), k=self.rng.randint(1, min(3, len(shard.agents))))
            sleep = self.rng.random() < 0.7
            request = SubmitCommand.Request(
                agent_ids=agents,
                kind='sleep' if sleep else 'noop',
                args_json=json.dumps({'duration_sec': round(self.rng.uniform(0.1, 1.5), 2)}) if sleep else '{}',
                priority=int(Priority.NORMAL),
                ttl_sec=round(self.rng.uniform(4.0, 15.0), 1),
                request_id=f'campaign-{self.schedule.seed}-{self.counter}',
            )
            self.requests.append(OpenRequest(key, request, now))
            self.stats['requests'] += 1

    def tick_requests(self, now: float) -> None:
        keep = []
        for req in self.requests:
            if self._step(req, now):
                keep.append(req)
        self.requests = keep

    def _send(self, req: OpenRequest, now: float) -> None:
        client = self.submit[req.shard]
        if not client.service_is_ready():
            return
        if req.tries:
            self.stats['resent'] += 1
        req.tries += 1
        req.sent_at = now
        req.future = client.call_async(req.request)

    def _step(self, req: OpenRequest, now: float) -> bool:
        """Advance one request; False when it is finished with."""
        future = req.future
        if future is None:
            if now < req.not_before:
                return True
            if req.answer is not None and not req.recheck_at:
                return False
            if req.answer is not None and now < req.recheck_at:
                return True
            if now - (req.recheck_at or req.created) > PATIENCE_SEC:
                self.stats['given_up'] += 1
                return False
            self._send(req, now)
            return True
        if not future.done():
            if now - req.sent_at > CALL_TIMEOUT_SEC:
                self.stats['timeouts'] += 1
                self.submit[req.shard].remove_pending_request(future)
                req.future = None
            return True
        reply = future.result()
        req.future = None
        self.answer_ms.append(round((now - req.sent_at) * 1000.0))
        if reply is None:
            return True
        if not reply.accepted:
            self.errors[reply.error[:80]] = self.errors.get(reply.error[:80], 0) + 1
            if 'retry' in reply.error and now - (req.recheck_at or req.created) < PATIENCE_SEC:
                req.not_before = now + RESEND_PAUSE_SEC  # then sent again (a new leader is catching up)
                return True
            self.stats['refused'] += 1
            if req.answer is not None:
                self._finding(req, f'a re-sent answered request was refused: {reply.error}')
                req.recheck_at = 0.0
            return req.answer is not None and bool(req.recheck_at)
        ids = (tuple(reply.command_ids), tuple(reply.agent_ids_out))
        if req.answer is None:
            req.answer = ids
            for command_id, agent in zip(*ids, strict=False):
                self.submitted[command_id] = agent
            # Re-send one request in four later, as a client whose answer was lost would.
            req.recheck_at = now + self.rng.uniform(0.5, 5.0) if self.rng.random() < 0.25 else 0.0
            return bool(req.recheck_at)
        self.stats['rechecked'] += 1
        if ids != req.answer or not reply.duplicate:
            self._finding(req, f'answered {req.answer[0]} first, then {ids[0]} (duplicate={reply.duplicate})')
            for command_id, agent in zip(*ids, strict=False):
                self.submitted[command_id] = agent
        req.recheck_at = 0.0
        return False

    def _finding(self, req: OpenRequest, detail: str) -> None:
        self.findings.append(
            {'kind': 'request_id_not_idempotent', 'request_id': req.request.request_id, 'detail': detail}
        )

    # -- events ------------------------------------------------------------------------------------------

    def run_events(self, elapsed: float, now: float) -> None:
        for index, event in enumerate(self.schedule.events):
            if index in self.done_events or event.at > elapsed:
                continue
            if event.op in DRIVER_OPS or (self.args.loopback_cuts and event.op in ('cut', 'cut_in', 'cut_out')):
                self.done_events.add(index)
                self.carry_out(event, now)
        for at, host in list(self.skew_clear):
            if now >= at:
                self.skew_clear.remove((at, host))
                self._fault(Fault('skew', host=host, offset_sec=0.0))

    def carry_out(self, event: Event, now: float) -> None:
        if event.op == 'replay':
            picked = self.rng.sample(list(self.captured), k=min(int(event.value), len(self.captured)))
            deliveries = picked + picked
            self.rng.shuffle(deliveries)
            for msg in deliveries:
                self.command_pubs[msg.agent_id].publish(msg)
            self.stats['replayed'] += len(deliveries)
        elif event.op == 'skew':
            self._fault(Fault('skew', host=event.target, offset_sec=event.value))
            self.skew_clear.append((now + event.duration, event.target))
        else:
            # Loopback: the simulator drops the agents' traffic both ways (no one-way cut without namespaces).
            self._fault(Fault('cut', host=event.target, duration_sec=event.duration))

    def _fault(self, fault: Fault) -> None:
        self.faults.publish(String(data=fault.to_json()))
        self.stats['faults_sent'] += 1

    def clear_faults(self) -> None:
        for _at, host in self.skew_clear:
            self._fault(Fault('skew', host=host, offset_sec=0.0))
        self.skew_clear.clear()
        self._fault(Fault('clear', host='*'))

    # -- the end -----------------------------------------------------------------------------------------

    def decided(self, fates: dict[str, Any]) -> bool:
        """Every command has a fate: FINISHED in the leader's journal, or unknown there but announced (the
        outcome was decided by a replica whose journal the current leader never copied: reported, not waited on)."""
        announced = {a[0] for a in self.announcements}
        return all(
            state == GetOutcomes.Request.STATE_FINISHED
            or (state == GetOutcomes.Request.STATE_UNKNOWN and command_id in announced)
            for command_id, (state, _) in fates.items()
        )

    def executed_ids(self) -> dict[str, str]:
        records = read_records(sorted(self.args.exec_dir.glob('exec-*.jsonl')))
        return {str(r['command_id']): str(r['agent']) for r in records if r.get('ev') == 'start'}

    def known_ids(self) -> dict[str, str]:
        known = dict(self.submitted)
        for command_id, entry in self.observer.journal.items():
            known.setdefault(command_id, entry.agent_id)
        for command_id, agent in self.executed_ids().items():
            known.setdefault(command_id, agent)
        return known

    def query_fates(self, executor: Executor, ids: dict[str, str], timeout: float) -> dict[str, Any] | None:
        """GetOutcomes for every id from its shard's leader: command_id -> (state, CommandOutcome | None); None
        when a leader did not answer in time."""
        fates: dict[str, Any] = {}
        by_shard: dict[ShardKey, list[str]] = {}
        for command_id, agent in ids.items():
            shard = self.fleet.shard_of_agent(agent)
            by_shard.setdefault((shard.site_id, shard.shard_id), []).append(command_id)
        for key, command_ids in by_shard.items():
            client = self.query[key]
            for start in range(0, len(command_ids), QUERY_CHUNK):
                chunk = command_ids[start : start + QUERY_CHUNK]
                if not client.service_is_ready():
                    return None
                future = client.call_async(GetOutcomes.Request(command_ids=chunk))
                deadline = time.monotonic() + timeout
                while not future.done() and time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.02)
                if not future.done():
                    client.remove_pending_request(future)
                    return None
                reply = future.result()
                for index, command_id in enumerate(chunk):
                    state = reply.states[index] if index < len(reply.states) else GetOutcomes.Request.STATE_UNKNOWN
                    fates[command_id] = (state, reply.outcomes[index] if index < len(reply.outcomes) else None)
        return fates


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fleet = load_fleet_config(args.config)
    schedule = Schedule.from_json(args.schedule.read_text())
    return run_program('fleet_sim.campaign_driver', lambda program: _run(program, args, fleet, schedule))


def _run(program: RosProgram, args: argparse.Namespace, fleet: FleetConfig, schedule: Schedule) -> int:
    node = program.add_node(Node('campaign_driver', context=program.context))
    driver = Driver(node, fleet, schedule, args)
    phase = 'waiting'
    started = time.monotonic()
    deadline = started + args.ready_timeout
    t0 = t0_wall = 0.0
    next_progress = next_query = 0.0
    fates: dict[str, Any] = {}
    known: dict[str, str] = {}
    with args.progress.open('a') as progress:
        while program.running:
            program.spin_for(TICK_SEC)
            now = time.monotonic()
            if phase == 'waiting' and driver.observer.leaders_ready() and driver.observer.online() >= fleet.agent_count:
                phase, t0, t0_wall = 'running', now, time.time()
                deadline = now + schedule.window_sec + args.settle_timeout
                driver.start_mission()
            if phase == 'running':
                driver.run_events(now - t0, now)
                driver.new_requests(now)
                if now - t0 >= schedule.window_sec:
                    phase = 'settling'
                    driver.clear_faults()
            if phase == 'settling' and args.settled.exists():
                phase, deadline = 'draining', now + args.drain_timeout
            if phase in ('running', 'settling', 'draining'):
                driver.tick_requests(now)
            if phase == 'running':
                # Only during the window: a step submitted later could be accepted after the last fate query.
                driver.tick_mission()
            if phase == 'draining' and now >= next_query:
                next_query = now + QUERY_PERIOD_SEC
                known = driver.known_ids()
                answer = driver.query_fates(program.executor, known, timeout=3.0)
                driver.stats['queries'] += 1
                if answer is None:
                    driver.stats['queries_unanswered'] += 1
                else:
                    fates = answer
                    if driver.decided(fates) and not driver.requests:
                        phase = 'finished'
            if now >= next_progress or phase == 'finished' or now >= deadline:
                next_progress = now + PROGRESS_SEC
                leaders = leaders_now(driver.observer)
                line = {'t': round(now - started, 2), 'phase': phase, 't0_wall': t0_wall, 'leaders': leaders}
                line['online'] = driver.observer.online()
                progress.write(json.dumps(line) + '\n')
                progress.flush()
            if phase == 'finished' or now >= deadline:
                break
        known = known or driver.known_ids()
        submissions = {c: a for c, a in known.items() if c in driver.submitted or c in driver.observer.journal}
        for command_id, (state, outcome) in fates.items():
            if state != GetOutcomes.Request.STATE_UNKNOWN:
                submissions.setdefault(command_id, known[command_id])  # the leader's journal accepted it
            if state == GetOutcomes.Request.STATE_FINISHED and outcome is not None:
                driver.announcements.append(
                    [command_id, outcome.agent_id, outcome.outcome, outcome.detail, from_time(outcome.stamp), 'service']
                )
        result = {
            'phase': phase,
            'submissions': sorted(submissions.items()),
            'announcements': driver.announcements,
            'pending': sorted(c for c, (state, _) in fates.items() if state == GetOutcomes.Request.STATE_PENDING),
            'unqueried': sorted(set(known) - set(fates)),
            'unqueryable': sorted(
                c for c, (state, _) in fates.items() if state == GetOutcomes.Request.STATE_UNKNOWN and c in submissions
            ),
            'leases': driver.observer.lease_log(),
            'findings': driver.findings,
            'answer_ms': sorted(driver.answer_ms),
            'refusals': driver.errors,
            'stats': driver.stats,
            'open_requests': len(driver.requests),
            'missions': driver.missions,
            't0_wall': t0_wall,
        }
        write_result(args.result, result)
    return 0 if phase == 'finished' or program.stop_requested else 1


if __name__ == '__main__':
    sys.exit(main())

"""StepDriver: runs every robot's inspection plan by submitting one step at a time through the shard's submit
service, the way an operator tool without the RunMission action would.

Acceptance is read from the shard journal as well as from the service response, because DDS hands a request to
every server of a service name (the leader and its standbys answer) and the first response wins; a submission
counts as accepted as soon as the leader journals a command carrying its trace id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rclpy.node import Node
from rclpy.task import Future

from fleet_core import topics
from fleet_core.config import FleetConfig
from fleet_core.model import Outcome, Priority
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandOutcome
from fleet_interfaces.srv import SubmitCommand
from fleet_sim.observer import FleetObserver
from fleet_sim.plan import RobotPlan

CALL_TIMEOUT_SEC = 3.0
"""A submit call without a response after this long went to a dead leader; it is abandoned."""
JOURNAL_GRACE_SEC = 1.5
"""After a refusal or timeout, wait this long for the journal to show the submission anyway before resubmitting."""
RESUBMIT_BACKOFF_SEC = 0.3


@dataclass(slots=True)
class _Robot:
    plan: RobotPlan
    shard: tuple[str, str]
    trace_id: str = ''
    future: Future | None = None
    sent_at: float = 0.0
    refused_at: float = 0.0
    command_id: str = ''
    not_before: float = 0.0


class StepDriver:
    def __init__(
        self,
        node: Node,
        fleet: FleetConfig,
        observer: FleetObserver,
        plans: dict[str, RobotPlan],
        *,
        ttl_sec: float = 30.0,
        max_calls_per_shard: int = 32,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self.observer = observer
        self.ttl_sec = ttl_sec
        self.max_calls = max_calls_per_shard
        self.monotonic = monotonic
        self.robots = {
            agent: _Robot(plan, (fleet.shard_of_agent(agent).site_id, fleet.shard_of_agent(agent).shard_id))
            for agent, plan in plans.items()
        }
        self.clients = {
            (s.site_id, s.shard_id): node.create_client(SubmitCommand, topics.shard_submit(s.site_id, s.shard_id))
            for s in fleet.shards
        }
        self._by_trace: dict[str, str] = {}
        self.submissions = 0
        self.refusals = 0
        self.timeouts = 0
        self.abandoned = 0
        self.orphan_commands = 0
        observer.on_journal.append(self._on_journal)
        observer.on_outcome.append(self._on_outcome)

    @property
    def finished(self) -> bool:
        return all(r.plan.finished for r in self.robots.values())

    # -- streams -----------------------------------------------------------------------------------------

    def _on_journal(self, msg: CommandMsg) -> None:
        agent = self._by_trace.get(msg.trace_id)
        if agent is None:
            return
        robot = self.robots[agent]
        if robot.trace_id == msg.trace_id and not robot.command_id:
            robot.command_id = msg.command_id
        elif robot.command_id != msg.command_id:
            self.orphan_commands += 1  # an abandoned submission was accepted after all; its outcome is still counted

    def _on_outcome(self, msg: CommandOutcome) -> None:
        robot = self.robots.get(msg.agent_id)
        if robot is None or not robot.trace_id:
            return
        if msg.command_id == robot.command_id or (not robot.command_id and msg.trace_id == robot.trace_id):
            robot.plan.on_outcome(Outcome(msg.outcome))
            self._clear(robot)

    def _clear(self, robot: _Robot) -> None:
        if robot.future is not None and not robot.future.done():
            self.clients[robot.shard].remove_pending_request(robot.future)
        robot.trace_id, robot.future, robot.command_id, robot.refused_at = '', None, '', 0.0

    # -- periodic ----------------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.monotonic()
        calls = dict.fromkeys(self.clients, 0)
        for robot in self.robots.values():
            if robot.future is not None and not robot.future.done() and not robot.command_id:
                calls[robot.shard] += 1
        for agent, robot in self.robots.items():
            if robot.trace_id:
                self._check_pending(robot, now)
                continue
            step = robot.plan.current()
            if step is None or now < robot.not_before or calls[robot.shard] >= self.max_calls:
                continue
            client = self.clients[robot.shard]
            if not client.service_is_ready():
                continue
            robot.trace_id = str(uuid.uuid4())
            self._by_trace[robot.trace_id] = agent
            request = SubmitCommand.Request(
                agent_ids=[agent],
                kind=step.kind,
                args_json=step.args_json,
                priority=int(Priority.NORMAL),
                ttl_sec=self.ttl_sec,
                trace_id=robot.trace_id,
            )
            robot.future = client.call_async(request)
            robot.sent_at = now
            calls[robot.shard] += 1
            self.submissions += 1

    def _check_pending(self, robot: _Robot, now: float) -> None:
        if robot.command_id:
            # Accepted (the journal may tell before the response does): the response no longer matters.
            if robot.future is not None and not robot.future.done():
                self.clients[robot.shard].remove_pending_request(robot.future)
                robot.future = None
            return
        future = robot.future
        if future is not None and future.done() and not robot.refused_at:
            response = future.result()
            if response is not None and response.accepted and response.command_ids:
                robot.command_id = response.command_ids[0]
                return
            robot.refused_at = now
            self.refusals += 1
        elif future is not None and not future.done() and now - robot.sent_at > CALL_TIMEOUT_SEC:
            self.clients[robot.shard].remove_pending_request(future)
            robot.future = None
            robot.refused_at = now
            self.timeouts += 1
        if robot.refused_at and now - robot.refused_at > JOURNAL_GRACE_SEC:
            self.abandoned += 1
            self._clear(robot)
            robot.not_before = now + RESUBMIT_BACKOFF_SEC

    # -- views -------------------------------------------------------------------------------------------

    def points(self) -> tuple[int, int]:
        done = sum(len(r.plan.points_done) for r in self.robots.values())
        total = sum(sum(1 for s in r.plan.steps if s.kind == 'report') for r in self.robots.values())
        return done, total

    def robots_done(self) -> int:
        return sum(1 for r in self.robots.values() if r.plan.succeeded)

    def robots_failed(self) -> int:
        return sum(1 for r in self.robots.values() if r.plan.failed)

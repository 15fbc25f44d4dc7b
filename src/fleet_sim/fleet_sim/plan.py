"""One robot's part of the inspection mission when driven step by step through the submit service:
undock, then goto/inspect/report per point, goto home, dock. Pure: fed with outcomes, says what to submit next."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fleet_core.model import Outcome


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    args: dict[str, object] = field(default_factory=dict)
    point: str = ''

    @property
    def args_json(self) -> str:
        return json.dumps(self.args, sort_keys=True)


def inspection_steps(points: list[tuple[str, float, float]], home: tuple[float, float], mission_id: str) -> list[Step]:
    steps = [Step('undock')]
    for point_id, x, y in points:
        steps += [
            Step('goto', {'x': x, 'y': y, 'point_id': point_id}, point_id),
            Step('inspect', {'point_id': point_id}, point_id),
            Step('report', {'point_id': point_id, 'mission_id': mission_id}, point_id),
        ]
    steps += [Step('goto', {'x': home[0], 'y': home[1], 'point_id': 'home'}), Step('dock')]
    return steps


class RobotPlan:
    """A failed step is retried up to `max_retries` times; then a point is skipped, and a failed undock, return or
    dock fails the robot's plan."""

    def __init__(self, agent_id: str, steps: list[Step], *, max_retries: int = 2) -> None:
        self.agent_id = agent_id
        self.steps = steps
        self.max_retries = max_retries
        self.index = 0
        self.retries = 0
        self.failed = False
        self.points_done: list[str] = []
        self.points_skipped: list[str] = []
        self.step_retries = 0

    @property
    def finished(self) -> bool:
        return self.failed or self.index >= len(self.steps)

    @property
    def succeeded(self) -> bool:
        return self.index >= len(self.steps) and not self.failed

    def current(self) -> Step | None:
        return None if self.finished else self.steps[self.index]

    def on_outcome(self, outcome: Outcome) -> None:
        step = self.current()
        if step is None:
            return
        if outcome == Outcome.SUCCEEDED:
            if step.kind == 'report':
                self.points_done.append(step.point)
            self.index += 1
            self.retries = 0
            return
        if self.retries < self.max_retries:
            self.retries += 1
            self.step_retries += 1
            return
        self.retries = 0
        if step.point:
            self.points_skipped.append(step.point)
            while self.index < len(self.steps) and self.steps[self.index].point == step.point:
                self.index += 1
        else:
            self.failed = True

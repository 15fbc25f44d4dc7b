"""Following a mission from outside its shards (fleetctl, the demo): one MissionFollower joins the task events and
the latched mission status of several shards for one mission id, in terms of MissionState. It survives a leader
failover because the new leader keeps publishing both for the resumed mission."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fleet_core.mission import MissionState, TaskEventKind, TaskEventRecord

ShardKey = tuple[str, str]

REJECTED = 'REJECTED'
"""TaskEvent.state of a refused RunMission goal (the event's detail says why); not a MissionState."""

EVENT_STATES: Mapping[TaskEventKind, MissionState] = {
    TaskEventKind.MISSION_STARTED: MissionState.RUNNING,
    TaskEventKind.MISSION_RESUMED: MissionState.RUNNING,
    TaskEventKind.MISSION_PAUSED: MissionState.PAUSED,
    TaskEventKind.MISSION_COMPLETED: MissionState.COMPLETED,
    TaskEventKind.MISSION_FAILED: MissionState.FAILED,
    TaskEventKind.MISSION_CANCELLED: MissionState.CANCELLED,
}
"""The mission state a mission-level task event announces."""


def parse_state(text: str) -> MissionState | None:
    """The MissionState a status message names, or None for anything else (e.g. REJECTED, or a newer state)."""
    try:
        return MissionState(text)
    except ValueError:
        return None


def is_active(text: str) -> bool:
    """True when a shard's latched status names a mission that has not finished (running, paused, cancelling)."""
    state = parse_state(text)
    return state is not None and not state.finished


@dataclass(slots=True)
class ShardProgress:
    """What one shard has said about the followed mission so far."""

    state: MissionState | None = None  # None until the shard reports the mission
    points_done: int = 0
    points_total: int = 0
    detail: str = ''  # the reason of the final state
    handoffs: int = 0
    lost: set[str] = field(default_factory=set)
    agents_done: set[str] = field(default_factory=set)
    rejection: str | None = None  # the shard refused the goal, for this reason

    @property
    def finished(self) -> bool:
        return self.rejection is not None or (self.state is not None and self.state.finished)

    @property
    def succeeded(self) -> bool:
        return self.state is MissionState.COMPLETED and self.points_done == self.points_total

    @property
    def label(self) -> str:
        if self.rejection is not None:
            return REJECTED
        return 'STARTING' if self.state is None else self.state.value

    def settle(self, state: MissionState, detail: str) -> None:
        """A final state is never left: a late RUNNING from a slow shard does not reopen a finished mission."""
        if self.state is not None and self.state.finished:
            return
        self.state = state
        if state.finished:
            self.detail = detail


class MissionFollower:
    """Feed it every TaskEventRecord of the followed shards' task_events (`on_event`) and mission_status
    (`on_status`) topics; records of other missions or shards are ignored."""

    def __init__(self, mission_id: str, keys: Iterable[ShardKey]) -> None:
        self.mission_id = mission_id
        self.shards: dict[ShardKey, ShardProgress] = {key: ShardProgress() for key in keys}

    def _progress(self, record: TaskEventRecord) -> ShardProgress | None:
        if record.mission_id != self.mission_id:
            return None
        return self.shards.get((record.site_id, record.shard_id))

    def on_event(self, record: TaskEventRecord) -> None:
        progress = self._progress(record)
        if progress is None:
            return
        if record.state == REJECTED:
            progress.rejection = record.detail
            return
        progress.points_done = max(progress.points_done, record.points_done)
        progress.points_total = record.points_total
        if record.event is TaskEventKind.HANDOFF:
            progress.handoffs += 1
        elif record.event is TaskEventKind.AGENT_LOST:
            progress.lost.add(record.agent_id)
        elif record.event is TaskEventKind.AGENT_REJOINED:
            progress.lost.discard(record.agent_id)
        elif record.event is TaskEventKind.AGENT_DONE:
            progress.agents_done.add(record.agent_id)
        state = EVENT_STATES.get(record.event)
        if state is not None:
            progress.settle(state, record.detail)

    def on_status(self, record: TaskEventRecord) -> None:
        progress = self._progress(record)
        if progress is None:
            return
        progress.points_done = max(progress.points_done, record.points_done)
        progress.points_total = record.points_total
        state = parse_state(record.state)
        if state is not None:
            progress.settle(state, record.detail)

    def finished(self) -> bool:
        """Every shard has finished the mission or refused it."""
        return all(p.finished for p in self.shards.values())

    def succeeded(self) -> bool:
        """Every shard completed every point it reported."""
        return all(p.succeeded for p in self.shards.values())

    def rejections(self) -> dict[ShardKey, str]:
        return {key: p.rejection for key, p in self.shards.items() if p.rejection is not None}

    def points(self) -> tuple[int, int]:
        """(done, total) over every shard."""
        return sum(p.points_done for p in self.shards.values()), sum(p.points_total for p in self.shards.values())

    def agents_done(self) -> int:
        return sum(len(p.agents_done) for p in self.shards.values())

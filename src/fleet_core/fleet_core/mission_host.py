"""The shard's mission, run by the leader and mirrored by standbys (no ROS here).

The leader drives an InspectionMission and journals every input it feeds it (goal, command outcomes, agents lost
or recovered, pause/resume/cancel, timeouts) with the mission clock at that moment. Standbys replay the journal
into their own copy; the mission is deterministic, so the copy is identical. On takeover the new leader feeds the
outcomes it saw on the shard's outcome stream for the steps the copy still waits for, and re-submits steps that
neither the dispatcher holds nor an outcome answers. Step ids are deterministic, so a re-submitted step that an
agent already ran is recognised by its command id and never runs twice.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_core.mission import (
    InspectionMission,
    MissionError,
    MissionProgress,
    MissionState,
    MissionStateError,
    TaskEventRecord,
    mission_from_dict,
    mission_to_dict,
)
from fleet_core.model import Outcome, Priority
from fleet_core.workflow import Point, StepRequest, WorkflowSpec

OUTCOME_MEMORY = 20_000
"""Outcomes a standby remembers from the outcome stream (it needs only those of steps still pending)."""


def step_to_dict(step: StepRequest) -> dict[str, Any]:
    return {
        'request_id': step.request_id,
        'agent_id': step.agent_id,
        'kind': step.kind,
        'args': step.args,
        'priority': int(step.priority),
        'ttl_sec': step.ttl_sec,
        'issued_at': step.issued_at,
        'state': step.state,
        'point_id': step.point_id,
    }


def step_from_dict(data: Mapping[str, Any]) -> StepRequest:
    return StepRequest(
        request_id=str(data['request_id']),
        agent_id=str(data['agent_id']),
        kind=str(data['kind']),
        args=dict(data['args']),
        priority=Priority(int(data['priority'])),
        ttl_sec=float(data['ttl_sec']),
        issued_at=float(data['issued_at']),
        state=str(data['state']),
        point_id=str(data['point_id']),
    )


class NoMission(RuntimeError):
    """A step that needs the hosted mission ran without one: a programming error, checked rather than asserted."""

    def __init__(self) -> None:
        super().__init__('no mission is hosted')


class MissionJournalError(ValueError):
    """A journal entry that cannot be applied (malformed, or a gap: the copy can no longer be trusted)."""


@dataclass(slots=True)
class MissionOutput:
    """What the host wants done after an input: steps to dispatch, queued steps to drop, events to publish,
    journal entries to publish (before the steps, so standbys never lag behind what agents were sent)."""

    requests: list[StepRequest] = field(default_factory=list)
    cancellations: list[str] = field(default_factory=list)
    events: list[TaskEventRecord] = field(default_factory=list)
    journal: list[str] = field(default_factory=list)
    finished: bool = False

    def extend(self, other: MissionOutput) -> None:
        self.requests += other.requests
        self.cancellations += other.cancellations
        self.events += other.events
        self.journal += other.journal
        self.finished = self.finished or other.finished


class MissionHost:
    """At most one mission per shard at a time. `leading` decides whether inputs come from the node (and are
    journaled) or from the leader's journal (`replay`)."""

    def __init__(
        self,
        *,
        site_id: str,
        shard_id: str,
        agents: Iterable[str],
        workflows: Callable[[str], WorkflowSpec],
        clock: Callable[[], float],
        node_id: str,
    ) -> None:
        self.site_id = site_id
        self.shard_id = shard_id
        self.agents = tuple(agents)
        self._workflows = workflows
        self._clock = clock
        self.node_id = node_id
        self.leading = False
        self.epoch = 0
        self.mission: InspectionMission | None = None
        self._now = 0.0  # the mission's clock: set before every input, journaled with it
        self._entry_no = 0
        self._entry_epoch = 0
        self._steps: dict[str, StepRequest] = {}  # request id -> step the mission still waits for
        self._seen: collections.OrderedDict[str, Outcome] = collections.OrderedDict()
        self.desynced = ''
        self._pause_reasons: set[str] = set()
        self._followed = (0, 0)  # (epoch, number) of the last entry replayed from a leader's journal
        self._started_here = False  # the mission was started (or adopted) while this replica led

    # ----- queries -----------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.mission is not None and not self.mission.state.finished

    def progress(self) -> MissionProgress | None:
        return self.mission.progress() if self.mission is not None else None

    def is_mission_step(self, command_id: str) -> bool:
        return command_id in self._steps

    # ----- leader inputs -----------------------------------------------------------------------------------

    def start(
        self, *, mission_id: str, workflow: str, points: list[Point], deadline: float | None = None
    ) -> MissionOutput:
        """Start a mission; raises MissionError (bad goal, unknown workflow) or MissionStateError (one is running)."""
        if self.active:
            if self.mission is None:
                raise NoMission
            raise MissionStateError(
                f'mission {self.mission.mission_id} is still {self.mission.state.value} on {self.shard_id}; '
                'cancel it first'
            )
        entry = {
            'op': 'start',
            'mission_id': mission_id,
            'workflow': workflow,
            'points': [[p.point_id, p.x, p.y] for p in points],
            'deadline': deadline,
        }
        self._check_start(entry)
        self._started_here = True
        return self._input(entry)

    def on_outcome(self, agent_id: str, command_id: str, outcome: Outcome) -> MissionOutput:
        if self.mission is None or command_id not in self._steps:
            return MissionOutput()
        return self._input({'op': 'outcome', 'agent': agent_id, 'command_id': command_id, 'outcome': int(outcome)})

    def sync_lost(self, lost: Iterable[str]) -> MissionOutput:
        """Level-triggered health: make the mission's lost set equal the health monitor's LOST agents."""
        out = MissionOutput()
        if not self.active:
            return out
        if self.mission is None:
            raise NoMission
        lost_now = set(lost)
        known = self.mission.lost_agents
        for agent in sorted(lost_now - known):
            out.extend(self._input({'op': 'lost', 'agent': agent}))
        for agent in sorted(known - lost_now):
            out.extend(self._input({'op': 'recovered', 'agent': agent}))
        return out

    def hold(self, reason: str) -> MissionOutput:
        """Pause the mission for `reason` (e-stop, fleet operation); it resumes once every reason is released.
        A standby only records the reason (the leader journals the pause)."""
        self._pause_reasons.add(reason)
        return self._reconcile_pause()

    def release(self, reason: str) -> MissionOutput:
        self._pause_reasons.discard(reason)
        return self._reconcile_pause()

    def _reconcile_pause(self) -> MissionOutput:
        if not (self.leading and self.active):
            return MissionOutput()
        if self.mission is None:
            raise NoMission
        state = self.mission.state
        if self._pause_reasons and state is MissionState.RUNNING:
            return self._input({'op': 'pause'})
        if not self._pause_reasons and state is MissionState.PAUSED:
            return self._input({'op': 'resume'})
        return MissionOutput()

    def cancel(self, reason: str) -> MissionOutput:
        """Raises MissionStateError when no mission is running."""
        if not self.active:
            raise MissionStateError(f'no mission is running on {self.site_id}/{self.shard_id}')
        return self._input({'op': 'cancel', 'reason': reason})

    def tick(self) -> MissionOutput:
        """Step timeouts and the mission deadline; journaled only when something happened."""
        if not self.active:
            return MissionOutput()
        return self._input({'op': 'tick'}, only_if_changed=True)

    # ----- standby inputs ----------------------------------------------------------------------------------

    def note_outcome(self, command_id: str, outcome: Outcome) -> None:
        """A standby saw this outcome on the shard's outcome stream (bounded memory, newest kept)."""
        self._seen[command_id] = outcome
        self._seen.move_to_end(command_id)
        while len(self._seen) > OUTCOME_MEMORY:
            self._seen.popitem(last=False)

    def replay(self, text: str) -> None:
        """Apply one journal entry of the leader. Raises MissionJournalError for a malformed entry or when a gap
        is first detected; after a gap, entries are skipped until the next snapshot re-synchronises the copy."""
        if self.leading:
            return
        try:
            entry = json.loads(text)
            number, epoch, op = int(entry['n']), int(entry['epoch']), str(entry['op'])
        except (ValueError, KeyError, TypeError) as exc:
            raise MissionJournalError(f'malformed mission journal entry: {exc!r}') from None
        if epoch < self._entry_epoch:
            return  # a fenced leader's late entry
        if epoch == self._entry_epoch and number <= self._entry_no:
            # Had already: a duplicate, or this replica's own entries coming back after it stepped down (a snapshot
            # among them must not roll the copy back).
            return
        resync = op in ('snapshot', 'start')
        if not resync and (epoch > self._entry_epoch or number != self._entry_no + 1):
            if self.desynced:
                return
            self.desynced = (
                f'journal gap: entry {number} (epoch {epoch}) after {self._entry_no} (epoch {self._entry_epoch})'
            )
            raise MissionJournalError(f'{self.desynced}; waiting for the next snapshot')
        self._entry_no, self._entry_epoch = number, epoch
        self._followed = (epoch, number)
        self._now = float(entry['t'])
        try:
            self._apply(entry)
        except (MissionError, MissionStateError, KeyError, TypeError, ValueError) as exc:
            self.desynced = f'cannot replay {op} entry {number}: {exc}'
            raise MissionJournalError(self.desynced) from None
        if resync:
            self.desynced = ''

    def promote(self, *, epoch: int, dispatcher_pending: Callable[[str], bool]) -> MissionOutput:
        """This process now leads with `epoch`: feed outcomes seen for waiting steps, re-submit lost ones."""
        self.leading = True
        self.epoch = epoch
        self._entry_epoch = epoch
        self._started_here = False
        out = MissionOutput()
        if self.mission is None or self.desynced:
            return out
        # First entry of the new epoch: the state this leader resumes from, so every follower (including a
        # former leader whose copy went further than ours) continues from the same state.
        out.extend(self.checkpoint())
        out.extend(self._resume_steps(self._seen.get, dispatcher_pending))
        return out

    def handoff_entry(self) -> str:
        """The running mission of a replica that does not lead, for a leader that may hold no copy of it (it led
        before it had discovered this replica's journal); '' when no mission runs here or the copy is unusable."""
        if self.leading or self.mission is None or not self.active or self.desynced:
            return ''
        entry = {
            'op': 'handoff',
            'mission': mission_to_dict(self.mission),
            'steps': [step_to_dict(step) for step in self._steps.values()],
            'epoch': self._entry_epoch,
            'n': self._entry_no,
            'by': self.node_id,
        }
        return json.dumps(entry, separators=(',', ':'))

    def adopt(
        self,
        text: str,
        *,
        decided: Callable[[str], Outcome | None],
        dispatcher_pending: Callable[[str], bool],
        newer_than: int = 0,
    ) -> MissionOutput | None:
        """While leading: a running mission another replica handed over (`handoff_entry`), taken when this copy
        runs none and knows nothing newer: not the same mission, not one started here, not a later entry of the
        journal it followed, and not a copy that stopped before `newer_than`, the epoch before this leader's (that
        epoch's leader had a newer copy: this hand-over was kept for late joiners from long ago). Journaled as a
        snapshot of this epoch (its followers take it), then resumed like a takeover: a waiting step already
        `decided` here gets its outcome, one neither decided nor pending is submitted again. None when not taken;
        raises MissionJournalError for a malformed entry."""
        if not self.leading:
            return None
        try:
            entry = json.loads(text)
            op, mission_id = str(entry['op']), str(entry['mission']['mission_id'])
            position = (int(entry['epoch']), int(entry['n']))
            state = MissionState(entry['mission']['state'])
        except (ValueError, KeyError, TypeError) as exc:
            raise MissionJournalError(f'malformed mission hand-over: {exc!r}') from None
        if op != 'handoff' or state.finished or position[0] < newer_than:
            return None
        mine = self.mission
        knows_better = mine is not None and (
            self.active or mine.mission_id == mission_id or self._started_here or position <= self._followed
        )
        if knows_better and not self.desynced:
            return None
        try:
            out = self._input({'op': 'snapshot', 'mission': entry['mission'], 'steps': entry['steps']})
        except (MissionError, MissionStateError, KeyError, TypeError, ValueError) as exc:
            raise MissionJournalError(f'cannot adopt the handed-over mission {mission_id}: {exc}') from None
        self.desynced = ''
        self._started_here = True
        out.extend(self._resume_steps(decided, dispatcher_pending))
        return out

    def demote(self) -> None:
        self.leading = False

    def checkpoint(self) -> MissionOutput:
        """Journal the whole mission (followers that joined late or saw a gap re-synchronise from it)."""
        if self.mission is None:
            return MissionOutput()
        steps = [step_to_dict(step) for step in self._steps.values()]
        entry = {'op': 'snapshot', 'mission': mission_to_dict(self.mission), 'steps': steps}
        return self._input(entry, apply=False)

    # ----- internals ---------------------------------------------------------------------------------------

    def _resume_steps(
        self, outcome_of: Callable[[str], Outcome | None], dispatcher_pending: Callable[[str], bool]
    ) -> MissionOutput:
        """A mission this replica now leads: each waiting step whose outcome is known gets it, each step neither
        known nor pending in the dispatcher is submitted again; the pause holds are applied again."""
        out = MissionOutput()
        if self.mission is None:
            return out
        for agent in self.mission.agents:
            request_id = self.mission.instance(agent).pending_request_id
            if request_id is None:
                continue
            seen = outcome_of(request_id)
            if seen is not None:
                out.extend(self.on_outcome(agent, request_id, seen))
            elif not dispatcher_pending(request_id) and request_id in self._steps:
                out.requests.append(self._steps[request_id])
        out.extend(self._reconcile_pause())
        return out

    def _check_start(self, entry: Mapping[str, Any]) -> None:
        try:
            self._workflows(str(entry['workflow']))
        except KeyError as exc:
            raise MissionError(str(exc.args[0]) if exc.args else 'unknown workflow') from None

    def _input(self, entry: dict[str, Any], *, only_if_changed: bool = False, apply: bool = True) -> MissionOutput:
        if not self.leading:
            return MissionOutput()  # a standby changes its copy only from the leader's journal
        self._now = self._clock()
        out = self._apply(entry) if apply else MissionOutput()
        if only_if_changed and not (out.events or out.requests or out.cancellations):
            return out
        self._entry_no += 1
        entry.update(n=self._entry_no, epoch=self.epoch, t=self._now, by=self.node_id)
        out.journal.append(json.dumps(entry, separators=(',', ':')))
        return out

    def _apply(self, entry: Mapping[str, Any]) -> MissionOutput:
        op = entry['op']
        if op == 'start':
            spec = self._workflows(str(entry['workflow']))
            self.mission = InspectionMission(
                spec,
                mission_id=str(entry['mission_id']),
                site_id=self.site_id,
                shard_id=self.shard_id,
                agent_ids=self.agents,
                points=[Point(str(p[0]), float(p[1]), float(p[2])) for p in entry['points']],
                clock=lambda: self._now,
                deadline=entry.get('deadline'),
            )
            self._steps.clear()
            self.mission.start()
        elif op == 'snapshot':
            spec = self._workflows(str(entry['mission']['workflow']))
            self.mission = mission_from_dict(spec, entry['mission'], clock=lambda: self._now)
            self._steps = {s['request_id']: step_from_dict(s) for s in entry['steps']}
        elif self.mission is None:
            raise MissionError(f'journal entry {op!r} without a started mission')
        elif op == 'outcome':
            command_id = str(entry['command_id'])
            self.mission.on_outcome(str(entry['agent']), command_id, Outcome(int(entry['outcome'])))
            self._steps.pop(command_id, None)
        elif op == 'lost':
            self.mission.on_agent_lost(str(entry['agent']))
        elif op == 'recovered':
            self.mission.on_agent_recovered(str(entry['agent']))
        elif op == 'pause':
            self.mission.pause()
        elif op == 'resume':
            self.mission.resume()
        elif op == 'cancel':
            self.mission.cancel(str(entry['reason']))
        elif op == 'tick':
            self.mission.tick(self._now)
        else:
            raise MissionError(f'unknown mission journal op {op!r}')
        return self._drain()

    def _drain(self) -> MissionOutput:
        if self.mission is None:
            raise NoMission
        requests = self.mission.next_requests()
        cancellations = self.mission.take_cancellations()
        for request in requests:
            self._steps[request.request_id] = request
        for request_id in cancellations:
            self._steps.pop(request_id, None)
        finished = self.mission.state.finished
        if finished:
            self._steps.clear()
        return MissionOutput(requests, cancellations, self.mission.take_events(), [], finished)

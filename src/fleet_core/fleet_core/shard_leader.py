"""ShardLeader: the decisions of one shard's orchestrator replica, without ROS.

It owns the dispatcher (while leading), the shard's mission (MissionHost: driven while leading, mirrored from the
leader's journal while standing by), the e-stop and waved pause/resume, backpressure, and what goes into the shard
journal and when. Every input (a submission, an ack, a timer tick, taking or losing the lease, an operator's
e-stop/operation/mission request, what a standby observes) returns one batch of Effects that the ROS node applies:
publish deliveries, announce outcomes, replicate the journal, answer. The clock, RNG and id factories are injected,
so one input sequence always yields the same decisions.

Durability: a submission is in the journal before it is answered, a delivery before it is handed out for publishing,
an outcome as it is decided. A journal that fails makes the leader step down (`Effects.journal_failed`).
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence

from fleet_core.config import FleetConfig
from fleet_core.dispatcher import CommandDispatcher, DispatchStats, Outbox, SubmitError
from fleet_core.mission import MissionStateError
from fleet_core.mission_host import MissionHost, MissionJournalError, MissionOutput, NoMission
from fleet_core.model import Ack, AckStatus, Command, CommandResult, Outcome, Priority
from fleet_core.shard_backpressure import ShardBackpressure
from fleet_core.shard_effects import Effects, LogLevel, OperationReply, SubmitReply, SubmitRequest
from fleet_core.shard_journal import CommandState, JournalUnavailable, ShardJournal, SubmissionRecord
from fleet_core.shard_operations import OperationRefused, ShardOperation
from fleet_core.waves import (
    EmptyEStopScope,
    EStopNotEngaged,
    EStopSnapshot,
    EStopState,
    FleetOp,
)
from fleet_core.workflow import Point, StepRequest, WorkflowSpec

ESTOP_HOLD = 'estop'
OPERATION_HOLD = 'operation'
CONTROL_TTL_SEC = 30.0
"""Deadline of the pause/resume commands sent in waves."""
CHECKPOINT_SEC = 5.0
"""While a mission runs, the leader journals a full snapshot this often (late or gapped standbys re-sync)."""
ACKS_PER_DRAIN = 256
"""Acks are applied one input each; their outcomes go out together (the node drains every few ms, or after this
many)."""
MAX_DRAIN_ROUNDS = 100
"""Outcomes of mission steps drive the mission, which may submit more steps: drained until nothing is left, within
this many rounds of the dispatcher (the rest goes out at the next input)."""


class NotLeading(RuntimeError):
    """A leader-only query ran on a replica that does not lead: a programming error of the caller."""

    def __init__(self, what: str) -> None:
        super().__init__(f'{what}: this replica does not lead its shard')


class ShardLeader:
    """One replica's decisions; `leading` while it holds the lease (lead() until step_down())."""

    def __init__(
        self,
        *,
        site_id: str,
        shard_id: str,
        agents: Sequence[str],
        fleet: FleetConfig,
        journal: ShardJournal,
        workflows: Callable[[str], WorkflowSpec],
        node_id: str,
        clock: Callable[[], float],
        rng: random.Random,
        command_ids: Callable[[], str] | None = None,
        operation_ids: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.site_id, self.shard_id, self.agents = site_id, shard_id, tuple(agents)
        self.fleet = fleet
        self.journal = journal
        self.node_id = node_id
        self.clock = clock
        self._rng = rng
        self._command_ids = command_ids
        self.missions = MissionHost(
            site_id=site_id, shard_id=shard_id, agents=agents, workflows=workflows, clock=clock, node_id=node_id
        )
        self.backpressure = ShardBackpressure(fleet.degradation, clock=clock, intake=fleet.intake)
        self.estop = EStopState(site_id=site_id, shard_id=shard_id, clock=clock)
        self.operations = ShardOperation(
            site_id=site_id,
            shard_id=shard_id,
            agents=agents,
            config=fleet.operations,
            clock=clock,
            operation_ids=operation_ids,
        )
        self.dispatcher: CommandDispatcher | None = None
        self._handed_over: list[Command] = []
        self._acks_undrained = 0
        self._last_checkpoint = 0.0
        self._stepping_down = False
        self.previous_epoch = 0
        """While leading: the newest epoch known before this leader's own (a mission handed over from an older one
        is stale: the leader of that epoch had a newer copy)."""

    @property
    def leading(self) -> bool:
        return self.dispatcher is not None

    @property
    def paused(self) -> bool:
        """The last announced fleet operation was a PAUSE."""
        return self.operations.paused

    @property
    def operation_id(self) -> str:
        return self.operations.operation_id

    # -- leadership --------------------------------------------------------------------------------------

    def lead(
        self, *, epoch: int, seq_base: Mapping[str, int], recovered: Iterable[Command], previous_epoch: int = 0
    ) -> Effects:
        """This replica took the lease with `epoch`: adopt the unfinished work (journaled under the new epoch,
        replicated, not sent yet). `previous_epoch`: the newest epoch known before this one (0: none). The node
        publishes its lease, then calls resume()."""
        effects = Effects()
        if self.dispatcher is not None:
            return effects
        self.previous_epoch = previous_epoch
        dispatcher = CommandDispatcher(
            site_id=self.site_id,
            shard_id=self.shard_id,
            agents=self.agents,
            epoch=epoch,
            settings=self.fleet.dispatch,
            clock=self.clock,
            rng=self._rng,
            id_factory=self._command_ids,
            seq_base=dict(seq_base),
        )
        adopted = dispatcher.adopt(recovered)
        self.dispatcher = dispatcher
        self.backpressure.reset()
        self._acks_undrained = 0
        if self._accept(adopted, effects):
            effects.replicate += adopted
        return effects

    def resume(self) -> Effects:
        """Send the adopted work, resume the mission this replica mirrored, keep it held by an e-stop or pause."""
        effects = Effects()
        self._drain(effects)
        dispatcher, host = self.dispatcher, self.missions
        if dispatcher is None:
            return effects
        if host.desynced:
            effects.log(LogLevel.ERROR, f'mission copy unusable ({host.desynced}); the running mission cannot resume')
        resumed = host.mission is not None and host.active
        pending = {c.command_id for c in dispatcher.pending()}
        out = host.promote(epoch=dispatcher.epoch, dispatcher_pending=pending.__contains__)
        how = f'resuming mission {host.mission.mission_id}' if resumed and host.mission is not None else ''
        self._take_up_mission(out, effects, how)
        return effects

    def step_down(self, reason: str, *, refused: frozenset[str] = frozenset()) -> Effects:
        """Stop leading. `refused`: commands whose submission failed to be journaled (the submitter was told no):
        dropped. The rest of the unfinished work is `Effects.handoff`, for the next leader."""
        effects = Effects()
        self._step_down(effects, reason, refused)
        return effects

    def fail(self, exc: JournalUnavailable, *, refused: frozenset[str] = frozenset()) -> Effects:
        """The journal failed: work that cannot be recorded must not be accepted, so stop leading."""
        effects = Effects()
        self._fail(effects, exc, refused)
        return effects

    # -- leader inputs -----------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, *, caught_up: Callable[[], bool]) -> tuple[SubmitReply, Effects]:
        """An operator's submission. A request_id answered before gets the same commands, never new ones; an
        unknown one waits (answered 'retry') until `caught_up()` says this leader holds its predecessor's journal."""
        effects = Effects()
        dispatcher = self.dispatcher
        if dispatcher is None:
            error = f'{self.node_id} is not the leader of this shard (standby or inactive); retry'
            return SubmitReply(False, error), effects
        request_id = request.request_id[:128]
        try:
            first = self.journal.request(request_id) if request_id else None
        except JournalUnavailable as exc:
            self._fail(effects, exc)
            return SubmitReply(False, f'{exc}; retry against the next leader'), effects
        if first is not None:
            # Answered before (perhaps by another leader, before a crash): the same commands, never new ones.
            return self._answer(first.trace_id, first.command_ids, first.agent_ids, duplicate=True), effects
        if request_id and not caught_up():
            error = f'{self.node_id} took over just now and is catching up with the other replicas; retry'
            return SubmitReply(False, error), effects
        try:
            commands = dispatcher.submit(
                list(request.agent_ids),
                request.kind,
                request.args_json or '{}',
                Priority(request.priority),
                request.ttl_sec,
                request.trace_id,
            )
        except (SubmitError, ValueError) as exc:
            return SubmitReply(False, str(exc)), effects
        trace_id = commands[0].trace_id if commands else request.trace_id
        ids, agents = tuple(c.command_id for c in commands), tuple(c.agent_id for c in commands)
        record = None
        if request_id:
            record = SubmissionRecord(request_id, trace_id, ids, agents, dispatcher.epoch, self.clock())
        if not self._accept(commands, effects, record, answer=True):
            return SubmitReply(False, 'the shard journal failed: not accepted; retry'), effects
        effects.replicate += commands
        if record is not None:
            effects.records.append(record)
        self._drain(effects)
        return self._answer(trace_id, ids, agents, duplicate=False, look_up=bool(request_id)), effects

    def on_ack(self, ack: Ack) -> Effects:
        """An agent's ack (already checked to come from one of this shard's agents). Its outcome goes out with the
        next drain_acks(); an ack reporting a newer epoch fences this leader (`Effects.fenced_by`)."""
        effects = Effects()
        dispatcher = self.dispatcher
        if dispatcher is None:
            return effects
        self.backpressure.on_ack(ack.command_id, ack.attempt, accepted=ack.status == AckStatus.ACCEPTED)
        dispatcher.on_ack(ack)
        if dispatcher.fenced:
            effects.fenced_by = dispatcher.fenced_by  # the epoch the agent reported, not a guess
            self._step_down(effects, 'an agent reported a newer epoch (fenced)')
            return effects
        self._acks_undrained += 1
        if self._acks_undrained >= ACKS_PER_DRAIN:
            self._drain(effects)
        return effects

    def on_agent_epoch(self, agent_id: str, highest_epoch_seen: int) -> Effects:
        """An agent's heartbeat names the highest epoch it has seen. Above ours, a newer leader commanded it (a
        replica that lost its journal and led first at a cold restart, say): the agents refuse our commands, so this
        leader steps down (`Effects.fenced_by`) and may lead again above that epoch, instead of leading on with
        nothing to command and refusing work handed to it from that newer epoch."""
        effects = Effects()
        dispatcher = self.dispatcher
        if dispatcher is None or highest_epoch_seen <= dispatcher.epoch:
            return effects
        effects.fenced_by = highest_epoch_seen
        self._step_down(effects, f'agent {agent_id} has seen epoch {highest_epoch_seen}, above ours (fenced)')
        return effects

    def drain_acks(self) -> Effects:
        """The outcomes (and the commands they unblock) of the acks applied since the last drain."""
        effects = Effects()
        if self._acks_undrained:
            self._drain(effects)
        return effects

    def tick(self, *, lost: Sequence[str]) -> Effects:
        """Retries and expiries, hand-overs to adopt, the mission's timeouts and lost agents, due waves."""
        effects = Effects()
        dispatcher = self.dispatcher
        if dispatcher is None:
            return effects
        dispatcher.tick()
        self._drain(effects)
        self._adopt_handed_over(effects)
        if self.leading:
            host = self.missions
            self._mission(host.sync_lost(lost), effects)
            self._mission(host.tick(), effects)
            now = self.clock()
            if host.active and now - self._last_checkpoint >= CHECKPOINT_SEC:
                self._last_checkpoint = now
                self._mission(host.checkpoint(), effects)
        self._send_due_waves(effects)
        self._drain(effects)
        return effects

    def submit_control(
        self, agents: Sequence[str], kind: str, *, priority: Priority, ttl_sec: float, trace_id: str
    ) -> Effects:
        """An operator-level control command (no arguments, no request_id) for `agents`, sent at once; a refusal is
        logged (nobody waits for an answer)."""
        effects = Effects()
        self._control(list(agents), kind, priority, ttl_sec, trace_id, effects)
        return effects

    def hand_over(self, command: Command) -> None:
        """A command another replica handed over (checked by the node's journal gate): adopted at the next tick,
        all of a hand-over at once, unless this leader owes or decided it already."""
        if self.dispatcher is not None:
            self._handed_over.append(command)

    def holds(self, command_ids: Iterable[str]) -> set[str]:
        """Those of `command_ids` this leader owes (pending, or handed over and not adopted yet) or has decided;
        none while standing by, and none of the decided ones while the journal is unavailable."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return set()
        ids = set(command_ids)
        held = ids & self._owed_ids(dispatcher)
        with contextlib.suppress(JournalUnavailable):  # then asked for again: a second hand-over is harmless
            held |= self.journal.finished_ids(ids - held)
        return held

    def _owed_ids(self, dispatcher: CommandDispatcher) -> set[str]:
        """The commands this leader owes: pending in its dispatcher, or handed over and not adopted yet."""
        return {c.command_id for c in dispatcher.pending()} | {c.command_id for c in self._handed_over}

    def settle(self, results: Sequence[CommandResult]) -> Effects:
        """Outcomes another replica decided or followed, handed over with its work: a command pending here gets that
        outcome (the first decision wins); the others are journaled so that they are never adopted later."""
        effects = Effects()
        dispatcher = self.dispatcher
        if dispatcher is None:
            return effects
        settled = [r for r in results if dispatcher.settle(r)]
        try:
            self.journal.record(results=[r for r in results if r not in settled])
        except JournalUnavailable as exc:
            self._fail(effects, exc)
            return effects
        if settled:
            effects.log(LogLevel.INFO, f'{len(settled)} adopted command(s) settled by outcomes another replica decided')
            self._drain(effects)
        return effects

    def status(self) -> tuple[DispatchStats, Effects]:
        """The dispatcher's counters, after backpressure re-evaluated the degradation level."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            raise NotLeading('status')
        effects = Effects()
        stats = dispatcher.stats()
        level = self.backpressure.update(stats)
        if level != dispatcher.degradation_level:
            effects.log(
                LogLevel.WARNING,
                f'{self.site_id}/{self.shard_id} degradation level {dispatcher.degradation_level} -> {level} '
                f'(queued {sum(stats.queue_depth[:3])}, first-ack p99 {self.backpressure.first_ack_p99_ms:.0f} ms)',
            )
            dispatcher.degradation_level = level
        return stats, effects

    # -- operators' requests -----------------------------------------------------------------------------

    def set_estop(self, *, engage: bool, reason: str, issued_by: str) -> tuple[OperationReply, Effects]:
        """Engage (every agent of the shard; queued commands cancelled, the mission held) or release the e-stop."""
        effects = Effects()
        dispatcher = self.dispatcher
        if dispatcher is None:
            return OperationReply(False, 'not the leader of this shard; retry against the leader'), effects
        reason, issued_by = reason[:200], issued_by[:64]
        try:
            if engage:
                snapshot = self.estop.engage(scope=self.agents, reason=reason, issued_by=issued_by)
            else:
                snapshot = self.estop.release(reason=reason, issued_by=issued_by)
        except (EmptyEStopScope, EStopNotEngaged) as exc:
            return OperationReply(False, str(exc), revision=self.estop.snapshot.revision), effects
        effects.estop = snapshot  # latched and immediate: never queued, never waved
        where = f'{self.site_id}/{self.shard_id} by {issued_by!r} (revision {snapshot.revision})'
        if engage:
            self._mission(self.missions.hold(ESTOP_HOLD), effects)
            cancelled = dispatcher.cancel_queued(f'e-stop: {reason}'[:200])
            self._drain(effects)
            effects.log(
                LogLevel.WARNING, f'E-STOP engaged on {where}: {reason!r}; {cancelled} queued command(s) cancelled'
            )
        else:
            self._mission(self.missions.release(ESTOP_HOLD), effects)
            effects.log(LogLevel.WARNING, f'e-stop released on {where}')
        return OperationReply(True, revision=snapshot.revision), effects

    def request_operation(self, *, op: int, issued_by: str) -> tuple[OperationReply, Effects]:
        """Pause or resume every agent in pre-announced staggered waves (sent from tick())."""
        effects = Effects()
        try:
            plan = self.operations.plan(op=op, issued_by=issued_by)
        except OperationRefused as exc:
            return OperationReply(False, str(exc)), effects
        effects.operation = plan
        if self.paused:
            self._mission(self.missions.hold(OPERATION_HOLD), effects)
        effects.log(
            LogLevel.INFO,
            f'operation {plan.operation_id} {plan.op.name} on {self.site_id}/{self.shard_id}: {plan.waves} wave(s) '
            f'of {plan.wave_size} every {plan.wave_interval_sec}s from +{plan.starts_at - self.clock():.2f}s',
        )
        return OperationReply(True, operation_id=plan.operation_id), effects

    def start_mission(self, *, mission_id: str, workflow: str, points: list[Point]) -> Effects:
        """Raises MissionError (bad goal, unknown workflow) or MissionStateError (not leading, one is running, or an
        e-stop or a pause holds the shard: its first steps would go to robots that refuse them or wait)."""
        if not self.missions.leading:
            raise MissionStateError('not the leader of this shard')
        where = f'{self.site_id}/{self.shard_id}'
        if self.estop.engaged:
            raise MissionStateError(f'e-stop engaged on {where}: release it before starting a mission')
        if self.paused:
            raise MissionStateError(f'{where} is paused: resume it before starting a mission')
        effects = Effects()
        out = self.missions.start(mission_id=mission_id, workflow=workflow, points=points)
        effects.log(LogLevel.INFO, f'mission {mission_id} ({workflow}) started: {len(points)} points')
        self._mission(out, effects)
        self._drain(effects)
        return effects

    def cancel_mission(self, reason: str) -> Effects:
        """Raises MissionStateError when no mission is running."""
        effects = Effects()
        self._mission(self.missions.cancel(reason), effects)
        self._drain(effects)
        return effects

    # -- what a replica observes (standby or leader) -----------------------------------------------------

    def observe_estop(self, snapshot: EStopSnapshot) -> Effects:
        """The latched e-stop: a standby mirrors the hold, so that leading later keeps the mission paused."""
        effects = Effects()
        if self.estop.observe(snapshot) and not self.leading:
            hold = self.missions.hold if snapshot.engaged else self.missions.release
            self._mission(hold(ESTOP_HOLD), effects)
        return effects

    def observe_operation(self, *, op: int, operation_id: str) -> Effects:
        """An announced fleet operation (the leader's own is ignored: it decided it)."""
        effects = Effects()
        if self.leading or not self.operations.observe(op=op, operation_id=operation_id):
            return effects
        self._mission((self.missions.hold if self.paused else self.missions.release)(OPERATION_HOLD), effects)
        return effects

    def mission_reader_joined(self) -> Effects:
        """A reader joined the mission journal (a standby started or restarted): while a mission runs, journal its
        snapshot now rather than at the next periodic checkpoint. A standby syncs only from a snapshot (or the
        start), and one that took over before the next checkpoint would hold no mission to resume."""
        effects = Effects()
        if not self.leading or not self.missions.active:
            return effects
        self._last_checkpoint = self.clock()
        self._mission(self.missions.checkpoint(), effects)
        return effects

    def mission_handoff(self) -> str:
        """While standing by: the running mission of this replica's copy, for a leader that may have none ('' when
        there is none to hand over)."""
        return '' if self.leading else self.missions.handoff_entry()

    def adopt_mission(self, entry: str) -> Effects:
        """While leading: a running mission another replica handed over (`mission_handoff`), taken when this leader
        runs none and knows of nothing newer (`MissionHost.adopt`), then resumed as at a takeover and held by an
        e-stop or pause in force."""
        effects = Effects()
        dispatcher, host = self.dispatcher, self.missions
        if dispatcher is None:
            return effects
        self._drain(effects)  # acks applied but not drained yet: their outcomes are decided before the steps are read
        owed = self._owed_ids(dispatcher)

        def decided(command_id: str) -> Outcome | None:
            fate = self.journal.fates([command_id])[0]
            return fate.result.outcome if fate.result is not None else None

        try:
            out = host.adopt(
                entry, decided=decided, dispatcher_pending=owed.__contains__, newer_than=self.previous_epoch
            )
        except MissionJournalError as exc:
            effects.log(LogLevel.ERROR, str(exc))
            return effects
        except JournalUnavailable as exc:
            self._fail(effects, exc)
            return effects
        if out is None or host.mission is None:
            return effects
        self._take_up_mission(out, effects, f'adopted mission {host.mission.mission_id} handed over by another replica')
        return effects

    def _take_up_mission(self, out: MissionOutput, effects: Effects, how: str) -> None:
        """A mission this replica starts leading (resumed at a takeover, or adopted): logged with `how` and its
        progress ('' : not logged), its steps submitted, held by an e-stop or a pause in force (an e-stop learned
        as a standby, from the latched topic, still holds it)."""
        host, dispatcher = self.missions, self.dispatcher
        if how and host.mission is not None and dispatcher is not None:
            progress = host.mission.progress()
            effects.log(
                LogLevel.WARNING,
                f'{how} at epoch {dispatcher.epoch}: {progress.points_done}/{progress.points_total} points done, '
                f'{len(out.requests)} step(s) re-submitted',
            )
        self._mission(out, effects)
        if self.estop.engaged:
            self._mission(host.hold(ESTOP_HOLD), effects)
        if self.paused:
            self._mission(host.hold(OPERATION_HOLD), effects)
        self._drain(effects)

    def replay_mission(self, entry: str) -> Effects:
        """One entry of the leader's mission journal (ignored while leading)."""
        effects = Effects()
        try:
            self.missions.replay(entry)
        except MissionJournalError as exc:
            effects.log(LogLevel.ERROR, f'mission journal: {exc}')
        return effects

    def observe_outcomes(self, results: Iterable[CommandResult]) -> None:
        """Outcomes on the shard's stream: a standby keeps those its mission copy may need after a takeover."""
        for result in results:
            self.missions.note_outcome(result.command_id, result.outcome)

    # -- internals ---------------------------------------------------------------------------------------

    def _step_down(self, effects: Effects, reason: str, refused: frozenset[str] = frozenset()) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None or self._stepping_down:
            return
        self._stepping_down = True
        try:
            effects.log(LogLevel.WARNING, f'stepping down as leader (epoch {dispatcher.epoch}): {reason}')
            # Outcomes already decided are facts (an agent's final ack): announce them, or nobody ever will, since
            # the dispatcher no longer counts those commands as pending. Unsent commands go to the next leader.
            out = dispatcher.take()
            try:
                self.journal.record(results=out.results)
            except JournalUnavailable as exc:
                effects.log(LogLevel.ERROR, f'outcomes not journaled while stepping down: {exc}')
            self._announce(out, effects)
            pending = [c for c in dispatcher.pending() if c.command_id not in refused]
            pending += self._handed_over  # handed to us, not adopted yet: on to the next leader with the rest
            self._handed_over = []
            self.dispatcher = None
            self.missions.demote()
            self.operations.drop()
            effects.stepped_down = reason
            effects.handoff += pending
        finally:
            self._stepping_down = False

    def _fail(self, effects: Effects, exc: JournalUnavailable, refused: frozenset[str] = frozenset()) -> None:
        effects.log(LogLevel.ERROR, f'{exc}; not eligible to lead until reconfigured (fix the state_dir)')
        effects.journal_failed = True
        self._step_down(effects, 'the shard journal failed', refused)

    def _accept(
        self,
        commands: list[Command],
        effects: Effects,
        record: SubmissionRecord | None = None,
        *,
        answer: bool = False,
    ) -> bool:
        """Journal accepted commands before anyone hears of them; fsynced (journal durability full) only when a
        submitter is `answer`ed after it: a mission step or a control wave is re-derived by its own machinery, and
        an fsync per step would stall the node past the lease under load. False (and no longer leading) when the
        journal failed: the caller refuses the commands."""
        try:
            self.journal.accept(commands, now=self.clock(), request=record, sync=answer)
        except JournalUnavailable as exc:
            self._fail(effects, exc, refused=frozenset(c.command_id for c in commands))
            return False
        return True

    def _drain(self, effects: Effects) -> None:
        """Journal what the dispatcher wants sent and announced, then hand it to the node; mission steps decided by
        those outcomes are submitted in the same batch."""
        self._acks_undrained = 0
        for _ in range(MAX_DRAIN_ROUNDS):
            dispatcher = self.dispatcher
            if dispatcher is None:
                return
            out = dispatcher.take()
            if not out:
                return
            try:
                self.journal.record(sends=out.sends, results=out.results)
            except JournalUnavailable as exc:
                self._fail(effects, exc)
                return
            self._announce(out, effects)
            effects.sends += out.sends
            for command in out.sends:
                self.backpressure.on_send(command.command_id, command.attempt)
        effects.log(LogLevel.ERROR, f'the dispatcher kept producing work for {MAX_DRAIN_ROUNDS} rounds; next tick')

    def _announce(self, out: Outbox, effects: Effects) -> None:
        effects.outcomes += out.results
        effects.hops += out.hops
        host = self.missions
        for result in out.results:
            if host.leading and host.is_mission_step(result.command_id):
                self._mission(host.on_outcome(result.agent_id, result.command_id, result.outcome), effects)

    def _mission(self, out: MissionOutput, effects: Effects) -> None:
        """The mission's journal entries, its steps submitted (a refused step is the mission's REJECTED outcome),
        its events."""
        effects.mission_journal += out.journal
        for request in out.requests:
            mission = self.missions.mission
            if mission is None:
                raise NoMission
            error = self._submit_step(request, mission.mission_id, effects)
            if error:
                effects.log(
                    LogLevel.ERROR,
                    f'mission {mission.mission_id}: step {request.request_id} for {request.agent_id} refused by the '
                    f'dispatcher: {error}',
                )
                self._mission(self.missions.on_outcome(request.agent_id, request.request_id, Outcome.REJECTED), effects)
        effects.task_events += out.events
        effects.mission_changed = effects.mission_changed or bool(out.events or out.journal)
        effects.mission_finished = effects.mission_finished or out.finished

    def _submit_step(self, request: StepRequest, trace_id: str, effects: Effects) -> str:
        """Queue one mission step with its deterministic id as the command id; '' or the refusal reason."""
        dispatcher = self.dispatcher
        if dispatcher is None:
            return 'not leading'
        try:
            commands = dispatcher.submit(
                [request.agent_id],
                request.kind,
                request.args_json(),
                request.priority,
                request.ttl_sec,
                trace_id,
                command_ids=[request.request_id],
            )
        except SubmitError as exc:
            return str(exc)
        if not self._accept(commands, effects):
            return 'the shard journal failed'
        effects.replicate += commands
        return ''

    def _send_due_waves(self, effects: Effects) -> None:
        if self.dispatcher is None:
            return
        plan, waves, done = self.operations.due()
        if plan is None:
            return
        kind = 'pause' if plan.op is FleetOp.PAUSE else 'resume'
        for wave in waves:
            self._submit_control(list(wave.agent_ids), kind, plan.operation_id, effects)
            effects.log(
                LogLevel.INFO, f'operation {plan.operation_id}: wave {wave.index + 1}/{plan.waves} ({kind}) sent'
            )
        if done and plan.op is FleetOp.RESUME:
            self._mission(self.missions.release(OPERATION_HOLD), effects)

    def _submit_control(self, agents: list[str], kind: str, trace_id: str, effects: Effects) -> None:
        self._control(agents, kind, Priority.HIGH, CONTROL_TTL_SEC, trace_id, effects)

    def _control(
        self, agents: list[str], kind: str, priority: Priority, ttl_sec: float, trace_id: str, effects: Effects
    ) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        try:
            commands = dispatcher.submit(agents, kind, '{}', priority, ttl_sec, trace_id)
        except SubmitError as exc:
            effects.log(LogLevel.ERROR, f'{kind} for {len(agents)} agent(s) refused: {exc}')
            return
        if self._accept(commands, effects):
            effects.replicate += commands
            self._drain(effects)

    def _adopt_handed_over(self, effects: Effects) -> None:
        handed, self._handed_over = self._handed_over, []
        dispatcher = self.dispatcher
        if not handed or dispatcher is None:
            return
        known = {c.command_id for c in dispatcher.pending()}
        try:
            known |= self.journal.finished_ids(c.command_id for c in handed)
        except JournalUnavailable as exc:
            self._fail(effects, exc)
            return
        fresh = list({c.command_id: c for c in handed if c.command_id not in known}.values())
        if not fresh:
            return
        adopted = dispatcher.adopt(fresh)
        try:
            self.journal.accept(adopted, now=self.clock(), sync=False)
        except JournalUnavailable as exc:
            self._fail(effects, exc)  # handed over again with the rest, never refused: nobody was answered
            return
        effects.log(
            LogLevel.INFO,
            f'adopted {len(adopted)} command(s) handed over from epoch(s) {sorted({c.epoch for c in fresh})}',
        )
        effects.replicate += adopted
        self._drain(effects)

    def _answer(
        self, trace_id: str, ids: tuple[str, ...], agents: tuple[str, ...], *, duplicate: bool, look_up: bool = True
    ) -> SubmitReply:
        if look_up:
            states = tuple(int(f.state) for f in self.journal.fates(ids))
        else:
            states = (int(CommandState.PENDING),) * len(ids)
        return SubmitReply(True, '', duplicate, trace_id, ids, agents, states)

"""The shard orchestrator's command dispatcher: per-agent priority queues, a bounded in-flight window,
sequence numbers, retries of the same command with jittered exponential backoff, and exactly one terminal
outcome per command. Pure and deterministic given its clock, RNG and id factory."""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from fleet_core.config import DispatchSettings
from fleet_core.kinds import InvalidCommand, KindRegistry
from fleet_core.model import NO_ACK, Ack, AckStatus, Command, CommandResult, Outcome, Priority
from fleet_core.replica import SEQ_GAP
from fleet_core.stats import LatencyWindow, RetryTimeout

Clock = Callable[[], float]

_OUTCOME_OF_ACK = {
    AckStatus.SUCCEEDED: Outcome.SUCCEEDED,
    AckStatus.FAILED: Outcome.FAILED,
    AckStatus.REJECTED_EXPIRED: Outcome.EXPIRED,
    AckStatus.CANCELLED: Outcome.CANCELLED,
}

_ANY_ATTEMPT = frozenset(
    {
        AckStatus.RECEIVED,
        AckStatus.ACCEPTED,
        AckStatus.SUCCEEDED,
        AckStatus.FAILED,
        AckStatus.CANCELLED,
        AckStatus.REJECTED_DUPLICATE,
    }
)
"""Acks that may answer an earlier attempt of the delivery in flight: they tell what happened to the command id
on the agent (it ran, or this seq can never run), which no later attempt of the same seq can change."""
_RAN = frozenset({AckStatus.SUCCEEDED, AckStatus.FAILED, AckStatus.CANCELLED})
"""Final statuses of a command that ran."""
ADOPTED_FATE_WAIT_SEC = 30.0
"""How long past its usual expiry an adopted command whose fate is unknown is asked about again (every retry_max_sec)
before it is declared FAILED ('outcome unknown'). The agent's durable store answers a redelivery with the stored fate,
and another replica's hand-over may carry the outcome it decided (`settle`); declaring FAILED while either may still
speak could contradict an outcome already announced. Bounded, so that every command still gets an outcome (G3)."""


def _fast_uuid4() -> Callable[[], str]:
    """Random (version 4) UUID strings from a PRNG seeded once from the OS: uuid.uuid4() reads /dev/urandom for
    every id, which costs more than the rest of submitting a command."""
    source = random.Random(uuid.uuid4().int)
    return lambda: str(uuid.UUID(int=source.getrandbits(128), version=4))


class SubmitError(ValueError):
    """A submission was refused as a whole (nothing was queued); the message says why."""


class Hop(NamedTuple):
    """One step of a command's lifecycle, for tracing (mirrors fleet_interfaces/TraceEvent). A tuple: one is
    made per hop of every command, so construction cost matters."""

    hop: str
    command_id: str
    trace_id: str
    agent_id: str
    priority: Priority
    attempt: int
    status: str
    detail: str
    stamp: float


@dataclass(slots=True)
class Outbox:
    """What the dispatcher wants done: commands to publish, outcomes to announce, hops to trace."""

    sends: list[Command] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sends or self.results or self.hops)


@dataclass(slots=True)
class _InFlight:
    command: Command
    deliveries: int
    next_retry_at: float
    sent_at: float
    expires_at: float
    """When, without a final ack, its fate is declared unknown: its deadline plus grace, or for an adopted command
    first sent after its deadline (to learn what became of it), that first sending plus grace."""
    ask_until: float = 0.0
    """An adopted command (a previous leader may have delivered it, and another replica may have decided it) is asked
    about again past `expires_at`, every retry_max_sec, until this instant; only then is its fate declared unknown."""
    accepted: bool = False
    last_status: int = NO_ACK


@dataclass(slots=True)
class _Lane:
    """One agent's queue and in-flight commands."""

    next_seq: int
    queue: list[tuple[int, int, Command]] = field(default_factory=list)
    in_flight: dict[str, _InFlight] = field(default_factory=dict)

    def regular_in_flight(self) -> int:
        return sum(1 for f in self.in_flight.values() if f.command.priority < Priority.SAFETY)


@dataclass(frozen=True, slots=True)
class DispatchStats:
    queue_depth: tuple[int, int, int, int]
    in_flight: int
    submitted: int
    succeeded: int
    failed: int
    expired: int
    rejected: int
    cancelled: int
    shed: int
    retries: int
    duplicates_suppressed: int
    ack_latency_p50_ms: float
    ack_latency_p99_ms: float
    acks_ignored: int = 0
    """Acks for a pending command that were not applied: from another agent, or answering another delivery."""


class CommandDispatcher:
    """Owns every command of one shard from submission to its terminal outcome."""

    def __init__(
        self,
        *,
        site_id: str,
        shard_id: str,
        agents: Iterable[str],
        epoch: int,
        settings: DispatchSettings,
        clock: Clock,
        rng: random.Random | None = None,
        kinds: KindRegistry | None = None,
        id_factory: Callable[[], str] | None = None,
        seq_base: dict[str, int] | None = None,
    ) -> None:
        if epoch < 1:
            raise ValueError('epoch must be >= 1')
        self.site_id = site_id
        self.shard_id = shard_id
        self.epoch = epoch
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random(0)
        self.kinds = kinds or KindRegistry()
        self._new_id = id_factory or _fast_uuid4()
        base = seq_base or {}
        self._lanes = {a: _Lane(next_seq=max(1, base.get(a, 0) + 1)) for a in agents}
        self._busy: set[str] = set()  # agents with queued or in-flight commands: all tick() has to look at
        self._order = itertools.count()
        self._outbox = Outbox()
        self.degradation_level = 0
        self.fenced = False
        self.fenced_by = 0
        """The newer epoch an agent reported when it fenced this dispatcher (0 while not fenced)."""
        self._sent_to: dict[str, str] = {}  # in-flight command id -> the agent it was sent to
        # Adopted commands a previous leader may have delivered: only their agent can say what became of them, so
        # they are sent even past their deadline and never expired, shed or cancelled while queued.
        self._maybe_sent: set[str] = set()
        self._latency = LatencyWindow()
        self.retry_timeout = RetryTimeout(settings.retry_initial_sec, settings.retry_max_sec)
        self._counts = dict.fromkeys(
            (
                'submitted',
                'succeeded',
                'failed',
                'expired',
                'rejected',
                'cancelled',
                'shed',
                'retries',
                'duplicates',
                'acks_ignored',
            ),
            0,
        )

    # -- inputs ------------------------------------------------------------------------------------------

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(self._lanes)

    def submit(
        self,
        agent_ids: Sequence[str],
        kind: str,
        args_json: str,
        priority: Priority,
        ttl_sec: float,
        trace_id: str = '',
        *,
        command_ids: Sequence[str] | None = None,
    ) -> list[Command]:
        """Queue one command per agent (all or nothing). Returns the commands, with seq 0 until sent.

        `command_ids`, aligned with `agent_ids`, lets the caller choose the idempotency keys (a workflow's
        deterministic step ids, so a replay after failover is recognised by agents); an id that is still
        queued or in flight here is not queued again and is left out of the result."""
        targets = list(dict.fromkeys(agent_ids)) or list(self._lanes)
        if command_ids is not None and (len(command_ids) != len(agent_ids) or len(targets) != len(agent_ids)):
            raise SubmitError('command_ids must name one id per target agent, and agents must be distinct')
        unknown = [a for a in targets if a not in self._lanes]
        if unknown:
            raise SubmitError(f'unknown agent(s) in shard {self.shard_id}: {", ".join(unknown[:5])}')
        if not ttl_sec > 0 or ttl_sec > self.settings.max_ttl_sec:
            raise SubmitError(f'ttl must be in (0, {self.settings.max_ttl_sec}] seconds, got {ttl_sec}')
        try:
            self.kinds.validate(kind, args_json, priority)
        except InvalidCommand as exc:
            raise SubmitError(str(exc)) from None
        if priority > Priority.LOW:
            full = [a for a in targets if len(self._lanes[a].queue) >= self.settings.max_queue_per_agent]
            if full:
                raise SubmitError(f'queue full for agent(s) {", ".join(full[:5])}; retry later')
        now = self.clock()
        trace_id = trace_id or self._new_id()
        ids = list(command_ids) if command_ids is not None else [self._new_id() for _ in targets]
        commands = [
            Command(
                command_id=command_id,
                trace_id=trace_id,
                site_id=self.site_id,
                shard_id=self.shard_id,
                agent_id=agent,
                seq=0,
                epoch=self.epoch,
                priority=priority,
                issued_at=now,
                deadline=now + ttl_sec,
                kind=kind,
                args_json=args_json,
                attempt=0,
            )
            for agent, command_id in zip(targets, ids, strict=True)
            if not self._is_pending(agent, command_id)
        ]
        for command in commands:
            self._enqueue(command, now)
        return commands

    def adopt(self, commands: Iterable[Command]) -> list[Command]:
        """Take over unfinished commands of a previous leader (failover). They keep id, trace, priority and
        deadline, get this leader's epoch and fresh seqs; agents recognise applied ones by command_id."""
        now = self.clock()
        adopted = [
            command.with_delivery(seq=0, epoch=self.epoch, attempt=0)
            for command in sorted(commands, key=lambda c: (c.issued_at, c.command_id))
            if command.agent_id in self._lanes
        ]
        for command in adopted:
            self._maybe_sent.add(command.command_id)
            self._enqueue(command, now, adopted=True)
        return adopted

    def _enqueue(self, command: Command, now: float, adopted: bool = False) -> None:
        lane = self._lanes[command.agent_id]
        self._busy.add(command.agent_id)
        self._counts['submitted'] += 1
        self._hop('SUBMIT', command, 'ADOPTED' if adopted else 'QUEUED', now)
        if (
            command.priority == Priority.LOW
            and not adopted
            and (self.degradation_level >= 2 or len(lane.queue) >= self.settings.max_queue_per_agent)
        ):
            self._counts['shed'] += 1
            self._finish(command, Outcome.REJECTED, NO_ACK, 0, 'shed by backpressure (LOW priority)', now)
            return
        if command.priority == Priority.SAFETY:
            self._send_new(lane, command, now)
            return
        heapq.heappush(lane.queue, (-int(command.priority), next(self._order), command))
        self._pump(lane, now)

    def on_ack(self, ack: Ack) -> None:
        """Feed one ack from the shard's ack topic. It changes a command only when it comes from the agent the
        command was sent to and answers the delivery in flight (its seq and epoch; an earlier attempt of that seq
        only where the answer cannot depend on the attempt). Anything else is counted (`acks_ignored`) and traced,
        never applied: nothing authenticates the topic, and an ack answering an older delivery can be stale."""
        lane = self._lanes.get(ack.agent_id)
        flight = lane.in_flight.get(ack.command_id) if lane is not None else None
        if lane is None or flight is None:
            owner = self._sent_to.get(ack.command_id)
            sent = self._lanes[owner].in_flight.get(ack.command_id) if owner is not None else None
            if sent is not None:
                self._ignore(sent, ack, f'from {ack.agent_id[:64]!r}, sent to {owner!r}')
            elif ack.final:
                self._counts['duplicates'] += 1
            return
        command = flight.command
        status = ack.status
        if ack.seq != command.seq or not 0 < ack.attempt <= command.attempt:
            self._ignore(
                flight,
                ack,
                f'answers seq {ack.seq} attempt {ack.attempt}; in flight: seq {command.seq} attempt {command.attempt}',
            )
            self._ask_again(flight, status)
            return
        if status == AckStatus.REJECTED_STALE_EPOCH:
            if ack.epoch <= self.epoch:
                self._ignore(flight, ack, f'names epoch {ack.epoch}, not newer than {self.epoch}')
                return
            # Not this command's fate: a newer leader owns it now and will announce its outcome. This dispatcher is
            # fenced; the command stays pending so that stepping down hands it back to the hot copy.
            self.fenced = True
            self.fenced_by = max(self.fenced_by, ack.epoch)
            self._hop('ACK', command, status.name, self.clock(), ack.detail, ack.attempt)
            return
        if ack.epoch != command.epoch:
            self._ignore(flight, ack, f'answers epoch {ack.epoch}; in flight: epoch {command.epoch}')
            self._ask_again(flight, status)
            return
        if ack.attempt < command.attempt and status not in _ANY_ATTEMPT:
            # E.g. REJECTED_EXPIRED or REJECTED_ESTOPPED for a delivery that arrived late or before a release: the
            # delivery in flight may still run. The agent's answer to it decides.
            self._ignore(flight, ack, f'{status.name} answers attempt {ack.attempt}; in flight: {command.attempt}')
            return
        now = self.clock()
        if flight.last_status == NO_ACK and flight.deliveries == 1:
            self.retry_timeout.sample(now - flight.sent_at)
        flight.last_status = int(status)
        self._hop('ACK', command, status.name, now, ack.detail, ack.attempt)
        if not status.is_final:
            if not flight.accepted:
                flight.accepted = True
                # Executing: stop re-delivering often; only re-solicit a possibly lost final ack.
                flight.next_retry_at = now + self.settings.retry_max_sec
            return
        if status == AckStatus.REJECTED_DUPLICATE and flight.deliveries < self.settings.retry_budget:
            # The agent applied a higher seq than this leader knew of (it led before hearing the agent's heartbeat).
            # The command itself was never applied: the agent checks its id first, and with a few commands in flight
            # per agent an applied id cannot have left the agent's window of outcomes. Number it above, send again.
            # Any attempt of this seq says so (an agent's applied seq never goes down); acks for the old seq that
            # arrive later answer a delivery no longer in flight and are ignored above.
            lane.next_seq = max(lane.next_seq, command.seq + SEQ_GAP)
            flight.command = command.with_delivery(seq=lane.next_seq, epoch=self.epoch, attempt=command.attempt)
            lane.next_seq += 1
            self._redeliver(flight, now, 'RESEQUENCED', ack.detail)
            return
        outcome = _OUTCOME_OF_ACK.get(status, Outcome.REJECTED)
        self._land(ack.agent_id, lane, ack.command_id)
        self._finish(command, outcome, int(status), flight.deliveries, ack.detail, now)
        self._pump(lane, now)

    def _ignore(self, flight: _InFlight, ack: Ack, why: str) -> None:
        self._counts['acks_ignored'] += 1
        self._hop('ACK', flight.command, 'IGNORED', self.clock(), f'{ack.status.name} {why}', ack.attempt)

    def _ask_again(self, flight: _InFlight, status: AckStatus) -> None:
        """The command's agent reports it ran, answering an older delivery (e.g. the previous leader's): the delivery
        in flight is re-sent at the next tick, before its deadline, so that the agent answers it with the stored fate
        instead of this leader waiting out its backoff."""
        if status in _RAN:
            flight.next_retry_at = min(flight.next_retry_at, self.clock())

    def _land(self, agent_id: str, lane: _Lane, command_id: str) -> None:
        """The command leaves the in-flight window (it has its outcome)."""
        del lane.in_flight[command_id]
        if self._sent_to.get(command_id) == agent_id:
            del self._sent_to[command_id]

    def tick(self) -> None:
        """Retries and expirations that are due now. Call it periodically (e.g. every 50 ms)."""
        now = self.clock()
        for agent in list(self._busy):
            lane = self._lanes[agent]
            if not lane.in_flight and not lane.queue:
                self._busy.discard(agent)
                continue
            for command_id, flight in list(lane.in_flight.items()):
                command = flight.command
                if now > flight.expires_at and now < flight.ask_until:
                    # Adopted, fate unknown: ask its agent again rather than guess (it may be unreachable for now).
                    flight.expires_at = min(flight.ask_until, now + self.settings.retry_max_sec)
                    self._redeliver(flight, now, 'ASK', 'fate unknown: asking the agent again')
                elif now > flight.expires_at:
                    # Sent, but its fate never came back: it may have run (acks lost) or not. FAILED is the outcome
                    # that claims neither (EXPIRED would tell the submitter it never ran, and invite a second run).
                    self._land(agent, lane, command_id)
                    why = 'accepted, no final ack' if flight.accepted else 'no ack'
                    detail = f'outcome unknown: {why} by the deadline'
                    self._finish(command, Outcome.FAILED, flight.last_status, flight.deliveries, detail, now)
                elif now >= flight.next_retry_at and now <= command.deadline:
                    if not flight.accepted and flight.deliveries >= self.settings.retry_budget:
                        self._land(agent, lane, command_id)
                        detail = f'no ack after {flight.deliveries} deliveries'
                        self._finish(command, Outcome.FAILED, flight.last_status, flight.deliveries, detail, now)
                    else:
                        self._redeliver(flight, now)
            if lane.queue:
                self._drop_expired_queued(lane, now)
                self._pump(lane, now)

    def settle(self, result: CommandResult) -> bool:
        """An outcome another replica decided (handed over with its unfinished work) for a command pending here,
        e.g. adopted from this replica's own journal: the first decision wins, so it becomes this command's outcome
        too (announced again, identically). False when the command is not pending here (decided, or unknown)."""
        lane = self._lanes.get(result.agent_id)
        if lane is None or not self._is_pending(result.agent_id, result.command_id):
            return False
        flight = lane.in_flight.get(result.command_id)
        if flight is not None:
            command = flight.command
            self._land(result.agent_id, lane, result.command_id)
        else:
            command = next(e[2] for e in lane.queue if e[2].command_id == result.command_id)
            lane.queue = [e for e in lane.queue if e[2].command_id != result.command_id]
            heapq.heapify(lane.queue)
        now = self.clock()
        self._finish(command, result.outcome, result.ack_status, result.attempts, result.detail, now)
        self._pump(lane, now)
        return True

    def cancel_queued(self, reason: str, *, below: Priority = Priority.SAFETY) -> int:
        """Cancel every queued (not yet sent) command under `below` priority, e.g. on e-stop."""
        now = self.clock()
        cancelled = 0
        for lane in self._lanes.values():
            keep = []
            for entry in lane.queue:
                if entry[2].priority < below and entry[2].command_id not in self._maybe_sent:
                    self._finish(entry[2], Outcome.CANCELLED, NO_ACK, 0, reason, now)
                    cancelled += 1
                else:
                    keep.append(entry)
            heapq.heapify(keep)
            lane.queue = keep
        return cancelled

    def take(self) -> Outbox:
        """Drain what the dispatcher wants done since the last call."""
        out, self._outbox = self._outbox, Outbox()
        return out

    # -- internals ---------------------------------------------------------------------------------------

    def _is_pending(self, agent_id: str, command_id: str) -> bool:
        lane = self._lanes[agent_id]
        return command_id in lane.in_flight or any(entry[2].command_id == command_id for entry in lane.queue)

    def _drop_expired_queued(self, lane: _Lane, now: float) -> None:
        expired = [e for e in lane.queue if now > e[2].deadline and e[2].command_id not in self._maybe_sent]
        if not expired:
            return
        lane.queue = [e for e in lane.queue if now <= e[2].deadline or e[2].command_id in self._maybe_sent]
        heapq.heapify(lane.queue)
        for entry in expired:
            self._finish(entry[2], Outcome.EXPIRED, NO_ACK, 0, 'deadline passed while queued', now)

    def _pump(self, lane: _Lane, now: float) -> None:
        while lane.queue and lane.regular_in_flight() < self.settings.in_flight_per_agent:
            command = heapq.heappop(lane.queue)[2]
            if now > command.deadline and command.command_id not in self._maybe_sent:
                self._finish(command, Outcome.EXPIRED, NO_ACK, 0, 'deadline passed while queued', now)
                continue
            self._send_new(lane, command, now)

    def _send_new(self, lane: _Lane, command: Command, now: float) -> None:
        sent = command.with_delivery(seq=lane.next_seq, epoch=self.epoch, attempt=1)
        lane.next_seq += 1
        self._hop('ROUTE', sent, f'seq={sent.seq}', now)
        expires_at = max(command.deadline, now) + self.settings.deadline_grace_sec
        flight = _InFlight(sent, 1, now + self._backoff(1), now, expires_at)
        if command.command_id in self._maybe_sent:
            flight.ask_until = expires_at + ADOPTED_FATE_WAIT_SEC
        lane.in_flight[sent.command_id] = flight
        self._sent_to[sent.command_id] = sent.agent_id
        self._deliver(sent, now)

    def _redeliver(self, flight: _InFlight, now: float, status: str = 'RETRY', detail: str = '') -> None:
        flight.command = flight.command.next_attempt()
        flight.deliveries += 1
        self._counts['retries'] += 1
        self._hop('RETRY', flight.command, status, now, detail)
        wait = self.settings.retry_max_sec if flight.accepted else self._backoff(flight.deliveries)
        flight.next_retry_at = now + wait
        self._deliver(flight.command, now)

    def _deliver(self, command: Command, now: float) -> None:
        self._hop('DELIVER', command, 'SENT', now)
        self._outbox.sends.append(command)

    def _backoff(self, deliveries: int) -> float:
        """Never sooner than the learnt retry timeout; doubling per delivery up to retry_max_sec. Jitter spreads a
        shard's retries after an outage instead of re-sending them all at once."""
        base = self.retry_timeout.value * 2.0 ** (deliveries - 1)
        return min(self.settings.retry_max_sec, base * (1.0 + 0.5 * self.rng.random()))

    def _finish(
        self, command: Command, outcome: Outcome, ack_status: int, attempts: int, detail: str, now: float
    ) -> None:
        latency_ms = max(0.0, (now - command.issued_at) * 1000.0)
        key = {
            Outcome.SUCCEEDED: 'succeeded',
            Outcome.FAILED: 'failed',
            Outcome.EXPIRED: 'expired',
            Outcome.REJECTED: 'rejected',
            Outcome.CANCELLED: 'cancelled',
        }[outcome]
        self._counts[key] += 1
        self._maybe_sent.discard(command.command_id)
        if outcome == Outcome.SUCCEEDED:
            self._latency.add(latency_ms)
        self._hop('OUTCOME', command, outcome.name, now, detail)
        self._outbox.results.append(
            CommandResult(
                command_id=command.command_id,
                trace_id=command.trace_id,
                agent_id=command.agent_id,
                shard_id=command.shard_id,
                seq=command.seq,
                outcome=outcome,
                ack_status=ack_status,
                attempts=attempts,
                latency_ms=latency_ms,
                detail=detail,
                stamp=now,
            )
        )

    def _hop(self, hop: str, command: Command, status: str, now: float, detail: str = '', attempt: int = -1) -> None:
        self._outbox.hops.append(
            Hop(
                hop,
                command.command_id,
                command.trace_id,
                command.agent_id,
                command.priority,
                command.attempt if attempt < 0 else attempt,
                status,
                detail,
                now,
            )
        )

    # -- observation -------------------------------------------------------------------------------------

    def pending(self) -> list[Command]:
        """Every command without an outcome yet (queued or in flight)."""
        found: list[Command] = []
        for lane in self._lanes.values():
            found.extend(f.command for f in lane.in_flight.values())
            found.extend(e[2] for e in lane.queue)
        return found

    def last_seq(self, agent_id: str) -> int:
        return self._lanes[agent_id].next_seq - 1

    def stats(self) -> DispatchStats:
        depth = [0, 0, 0, 0]
        in_flight = 0
        for lane in self._lanes.values():
            in_flight += len(lane.in_flight)
            for _, _, command in lane.queue:
                depth[int(command.priority)] += 1
        c = self._counts
        return DispatchStats(
            queue_depth=(depth[0], depth[1], depth[2], depth[3]),
            in_flight=in_flight,
            submitted=c['submitted'],
            succeeded=c['succeeded'],
            failed=c['failed'],
            expired=c['expired'],
            rejected=c['rejected'],
            cancelled=c['cancelled'],
            shed=c['shed'],
            retries=c['retries'],
            duplicates_suppressed=c['duplicates'],
            ack_latency_p50_ms=self._latency.percentile(50),
            ack_latency_p99_ms=self._latency.percentile(99),
            acks_ignored=c['acks_ignored'],
        )

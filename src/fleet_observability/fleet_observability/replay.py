"""Deterministic replay of a recorded shard through the pure CommandDispatcher (`fleetctl replay`).

Inputs come from a recording of `/fleet/**` and `/*/*/command`: the shard journal (every accepted command, at
its submit instant), acks, the per-agent command topics (what was sent), outcomes and trace hops. The
dispatcher is driven with the recorded clock: submissions at their issued_at, acks at the instant the
orchestrator handled them (its ACK trace hop or outcome stamp when recorded, else the recorder's receipt
time), ticks at the recorded tick decisions (RETRY hops, re-sends, EXPIRED/FAILED outcomes) and one final
tick. Its decisions (per-command outcome, ack status, attempts, seq, and the sends) are compared with the
recorded ones. Retry jitter comes from the orchestrator's RNG: give its `retry_jitter_seed` to reproduce it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from fleet_core.config import DispatchSettings
from fleet_core.dispatcher import CommandDispatcher, SubmitError
from fleet_core.model import Ack, Command, CommandResult, Outcome
from fleet_core.trace import Hop, TraceRecord

FINAL_TICK_MARGIN_SEC = 0.05


class ReplayError(ValueError):
    """A recording that has nothing to replay (no journal), or that cannot be replayed as asked."""


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    command_id: str
    agent_id: str
    outcome: Outcome
    ack_status: int
    attempts: int
    seq: int
    stamp: float


@dataclass
class ShardRecording:
    """What one shard's recording holds, already decoded into domain objects, in recorded order."""

    site_id: str
    shard_id: str
    journal: list[tuple[float, Command]] = field(default_factory=list)
    """(recorder receipt time, command as accepted: seq 0, attempt 0)."""
    acks: list[tuple[float, Ack]] = field(default_factory=list)
    """(recorder receipt time, ack)."""
    sends: list[tuple[float, Command]] = field(default_factory=list)
    outcomes: dict[str, RecordedOutcome] = field(default_factory=dict)
    hops: list[TraceRecord] = field(default_factory=list)
    heartbeats: int = 0


@dataclass(frozen=True, slots=True)
class ReplayReport:
    site_id: str
    shard_id: str
    epoch: int
    submissions: int
    acks: int
    ticks: int
    commands: int
    matched: int
    mismatches: tuple[str, ...]
    sends_recorded: int
    sends_replayed: int
    sends_match: bool
    sends_before_recording: int = 0
    """Replayed sends ahead of an agent's first recorded send: made before the recorder matched that agent's
    command topic (a recording started just before a submission), so there is nothing to compare them with."""

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.sends_match and self.matched == self.commands

    def render(self) -> str:
        head = (
            f'{self.site_id}/{self.shard_id} epoch {self.epoch}: {self.submissions} submission(s), {self.acks} ack(s), '
            f'{self.ticks} tick(s) replayed; outcomes {self.matched}/{self.commands} match; '
            f'sends {self.sends_replayed} replayed vs {self.sends_recorded} recorded '
            f'({"match" if self.sends_match else "DIFFER"})'
        )
        if self.sends_before_recording:
            head += f'; {self.sends_before_recording} replayed send(s) came before the recording began (not compared)'
        lines = [head, *(f'  MISMATCH {m}' for m in self.mismatches[:20])]
        if len(self.mismatches) > 20:
            lines.append(f'  ... {len(self.mismatches) - 20} more')
        return '\n'.join(lines)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _submission_groups(journal: Sequence[tuple[float, Command]]) -> list[tuple[float, list[Command]]]:
    """Journal entries of one submit call: consecutive, same trace, instant, kind, args, priority, deadline."""
    groups: list[tuple[float, list[Command]]] = []
    for received, command in journal:
        key = (command.trace_id, command.issued_at, command.kind, command.args_json, command.priority, command.deadline)
        last = groups[-1][1][0] if groups else None
        if last is not None and key == (
            last.trace_id,
            last.issued_at,
            last.kind,
            last.args_json,
            last.priority,
            last.deadline,
        ):
            groups[-1][1].append(command)
        else:
            groups.append((received, [command]))
    return groups


def _ack_instants(rec: ShardRecording) -> list[tuple[float, Ack]]:
    """When the orchestrator handled each ack: its ACK hop stamp, or the outcome stamp for the final ack."""
    hop_times: dict[tuple[str, int, str], float] = {}
    for hop in rec.hops:
        if hop.hop == Hop.ACK:
            hop_times.setdefault((hop.command_id, hop.attempt, hop.status), hop.stamp)
    out: list[tuple[float, Ack]] = []
    for received, ack in rec.acks:
        instant = hop_times.get((ack.command_id, ack.attempt, ack.status.name))
        if instant is None and ack.final:
            outcome = rec.outcomes.get(ack.command_id)
            if outcome is not None and outcome.ack_status == int(ack.status):
                instant = outcome.stamp
        out.append((received if instant is None else instant, ack))
    return out


def _tick_instants(rec: ShardRecording, command_ids: set[str]) -> list[float]:
    """Recorded instants where the orchestrator's tick decided something: retries, expiries, budget failures."""
    instants = {h.stamp for h in rec.hops if h.hop == Hop.RETRY and h.command_id in command_ids}
    if not instants:
        instants = {t for t, c in rec.sends if c.attempt > 1 and c.command_id in command_ids}
    for outcome in rec.outcomes.values():
        if outcome.command_id in command_ids and outcome.outcome in (Outcome.EXPIRED, Outcome.FAILED):
            if outcome.outcome == Outcome.FAILED and outcome.ack_status == 3:  # a FAILED ack, not a tick decision
                continue
            instants.add(outcome.stamp)
    return sorted(instants)


def replay_shard(
    rec: ShardRecording,
    *,
    settings: DispatchSettings,
    agents: Iterable[str] | None = None,
    seed: int = 0,
) -> list[ReplayReport]:
    """Replay each leader epoch of the shard found in the journal. Raises ReplayError without a journal."""
    if not rec.journal:
        raise ReplayError(
            f'{rec.site_id}/{rec.shard_id}: no journal entries in the recording '
            '(record /fleet/<site>/<shard>/journal, e.g. `fleetctl record` with the default topics)'
        )
    by_epoch: dict[int, list[tuple[float, Command]]] = defaultdict(list)
    for received, command in rec.journal:
        by_epoch[command.epoch].append((received, command))
    agent_ids = tuple(agents) if agents is not None else tuple(dict.fromkeys(c.agent_id for _, c in rec.journal))
    seen_before: set[str] = set()
    reports = []
    for epoch in sorted(by_epoch):
        journal = by_epoch[epoch]
        reports.append(_replay_epoch(rec, epoch, journal, seen_before, settings, agent_ids, seed))
        seen_before.update(c.command_id for _, c in journal)
    return reports


def _replay_epoch(
    rec: ShardRecording,
    epoch: int,
    journal: list[tuple[float, Command]],
    adopted_ids: set[str],
    settings: DispatchSettings,
    agents: tuple[str, ...],
    seed: int,
) -> ReplayReport:
    clock = _Clock()
    pending_ids: list[str] = []
    # A new leader continues each agent's seqs. Where it started shows in its first send in this epoch, and in the
    # seqs of the outcomes of the commands submitted in this epoch (the recorder may have matched an agent's command
    # topic only after its first send, when the journal, acks and outcomes of that command were still recorded).
    first_seq: dict[str, int] = {}
    fresh = [rec.outcomes.get(c.command_id) for _, c in journal if c.command_id not in adopted_ids]
    seqs = [(sent.agent_id, sent.seq) for _, sent in rec.sends if sent.epoch == epoch]
    seqs += [(outcome.agent_id, outcome.seq) for outcome in fresh if outcome is not None and outcome.seq > 0]
    for agent, seq in seqs:
        first_seq[agent] = min(first_seq.get(agent, seq), seq)
    dispatcher = CommandDispatcher(
        seq_base={agent: seq - 1 for agent, seq in first_seq.items()},
        site_id=rec.site_id,
        shard_id=rec.shard_id,
        agents=agents,
        epoch=epoch,
        settings=settings,
        clock=clock,
        rng=random.Random(seed),
        id_factory=lambda: pending_ids.pop(0),
    )
    command_ids = {c.command_id for _, c in journal}
    # (time, order at equal time, kind, payload): submissions first, then acks, then ticks.
    events: list[tuple[float, int, str, object]] = []
    for received, group in _submission_groups(journal):
        # fresh submissions happen at issued_at; adopted ones (failover) when the new leader journaled them
        instant = received if group[0].command_id in adopted_ids else group[0].issued_at
        events.append((instant, 0, 'submit', group))
    acks = [(t, a) for t, a in _ack_instants(rec) if a.epoch == epoch and a.command_id in command_ids]
    events.extend((t, 1, 'ack', a) for t, a in acks)
    ticks = _tick_instants(rec, command_ids)
    last = max([e[0] for e in events] + ticks)
    ticks.append(last + FINAL_TICK_MARGIN_SEC)
    events.extend((t, 2, 'tick', None) for t in ticks)
    events.sort(key=lambda e: (e[0], e[1]))

    results: dict[str, CommandResult] = {}
    sends: list[Command] = []
    submissions = 0
    problems: list[str] = []
    for instant, _, kind, payload in events:
        clock.now = max(clock.now, instant)
        if kind == 'submit':
            submitted = cast(list[Command], payload)
            submissions += 1
            first = submitted[0]
            if first.command_id in adopted_ids:
                dispatcher.adopt(submitted)
            else:
                pending_ids.extend(c.command_id for c in submitted)
                try:
                    dispatcher.submit(
                        [c.agent_id for c in submitted],
                        first.kind,
                        first.args_json,
                        first.priority,
                        first.deadline - first.issued_at,
                        first.trace_id,
                    )
                except SubmitError as exc:
                    problems.append(f'submission {first.trace_id} was accepted when recorded, refused on replay: {exc}')
                    pending_ids.clear()
        elif kind == 'ack':
            dispatcher.on_ack(cast(Ack, payload))
        else:
            dispatcher.tick()
        out = dispatcher.take()
        sends.extend(out.sends)
        for result in out.results:
            results[result.command_id] = result

    matched = 0
    for _, command in journal:
        recorded = rec.outcomes.get(command.command_id)
        replayed = results.get(command.command_id)
        if recorded is None and replayed is None:
            matched += 1  # still open in both
            continue
        if recorded is None or replayed is None:
            got = 'no outcome' if replayed is None else replayed.outcome.name
            want = 'no outcome' if recorded is None else recorded.outcome.name
            problems.append(f'{command.command_id} ({command.agent_id}): recorded {want}, replayed {got}')
            continue
        want_t = (recorded.outcome, recorded.ack_status, recorded.attempts, recorded.seq)
        got_t = (replayed.outcome, replayed.ack_status, replayed.attempts, replayed.seq)
        if want_t == got_t:
            matched += 1
        else:
            problems.append(
                f'{command.command_id} ({command.agent_id}): recorded {want_t[0].name} ack={want_t[1]} '
                f'attempts={want_t[2]} seq={want_t[3]}, replayed {got_t[0].name} ack={got_t[1]} '
                f'attempts={got_t[2]} seq={got_t[3]}'
            )
    recorded_sends = sorted((c.agent_id, c.seq, c.attempt, c.command_id) for _, c in rec.sends if c.epoch == epoch)
    replayed_sends = sorted((c.agent_id, c.seq, c.attempt, c.command_id) for c in sends)
    # Sends ahead of an agent's first recorded one are outside the recording; an agent with no recorded send at all
    # is compared in full (a recorder that never heard its topic is not taken for a late start).
    first_recorded: dict[str, tuple[int, int]] = {}
    for agent, seq, attempt, _ in recorded_sends:
        first_recorded.setdefault(agent, (seq, attempt))
    compared = [s for s in replayed_sends if s[0] not in first_recorded or s[1:3] >= first_recorded[s[0]]]
    sends_match = not rec.sends or recorded_sends == compared
    return ReplayReport(
        site_id=rec.site_id,
        shard_id=rec.shard_id,
        epoch=epoch,
        submissions=submissions,
        acks=len(acks),
        ticks=len(ticks),
        commands=len(journal),
        matched=matched,
        mismatches=tuple(problems),
        sends_recorded=len(recorded_sends),
        sends_replayed=len(replayed_sends),
        sends_match=sends_match,
        sends_before_recording=len(replayed_sends) - len(compared),
    )

"""Property test of the whole command protocol, judged by the outcome-truth checker (fleet_core.history).

The real CommandDispatcher and the real agent intake (CommandIntake on a SQLite DedupStore per agent) run inside a
model of everything around them:

- the network: commands and acks are delivered in any order, duplicated or lost; an ack may answer any delivery,
  including one a previous leader sent;
- two orchestrator replicas, each with a durable journal of accepted submissions and outcomes (what the shard
  journal holds): the leader writes its own before answering or announcing, and sends each entry to the standby,
  where it arrives late, out of order or never. The standby applies entries in order and only from the leader it
  follows; a gap or a late start leaves it behind until it takes a snapshot. The model grants the standby the
  leader's journal high-water mark (leases carry it), so a standby that is behind knows it and may not lead;
- leadership: epochs unique by construction; a takeover by a caught-up standby, with or without having heard the
  agents' heartbeats (without them it numbers commands below what agents applied); the new epoch reaches each
  agent late (its lease), so deliveries of the dead leader can still run; an election race between two eligible
  replicas, whose loser sends its adopted deliveries before it is fenced; both replicas lost, then a cold restart
  from their journals; a standby started late;
- agents that crash while executing (their execution is interrupted, never run again).

Every run ends with a quiesce (everything delivered, every agent has the last epoch, every deadline passed) and is
judged by check_history: every submitted command has one announced outcome that tells the truth about what the
agents executed (their execution records), nothing ran twice, late or under a fenced epoch."""

from __future__ import annotations

import itertools
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from fleet_core.config import DispatchSettings, IntakeSettings
from fleet_core.dedup_store import DedupStore
from fleet_core.dispatcher import CommandDispatcher
from fleet_core.history import Announcement, ExecResult, Execution, Submission, check_history
from fleet_core.intake import CommandIntake
from fleet_core.kinds import KindRegistry
from fleet_core.model import Ack, AckStatus, Command, Priority

AGENTS = ('r1', 'r2', 'r3')
DISPATCH = DispatchSettings(retry_initial_sec=0.2, retry_max_sec=1.0, retry_budget=4, deadline_grace_sec=0.5)


@dataclass
class Run:
    """One execution as the agent's robot saw it (the ground truth the checker trusts)."""

    command: Command
    started_at: float
    fence_epoch: int
    result: ExecResult = ExecResult.UNKNOWN
    finished_at: float | None = None

    def record(self) -> Execution:
        c = self.command
        return Execution(
            c.agent_id, c.command_id, c.epoch, self.started_at, c.deadline, self.result, self.finished_at,
            c.seq, c.attempt, self.fence_epoch,
        )  # fmt: skip


@dataclass
class Agent:
    agent_id: str
    path: str
    clock: FakeClock
    intake: CommandIntake = field(init=False)
    running: list[Run] = field(default_factory=list)
    lease_epoch: int = 0
    """The newest leader epoch on its way to this agent (its lease), not yet observed."""

    def __post_init__(self) -> None:
        self.boot()

    def boot(self) -> None:
        self.intake = CommandIntake(
            agent_id=self.agent_id,
            shard_id='z',
            store=DedupStore(self.path, self.agent_id),
            kinds=KindRegistry(),
            settings=IntakeSettings(clock_skew_tolerance_sec=0.0),
            clock=self.clock,
        )
        self.running = []


@dataclass(frozen=True)
class Entry:
    """One journal entry as the leader of `epoch` wrote it at `index`: an accepted command or an outcome."""

    epoch: int
    index: int
    command: Command | None = None
    outcome_of: str = ''


@dataclass
class Replica:
    name: str
    alive: bool = False
    journal: list[Entry] = field(default_factory=list)
    """Durable: survives the replica's death."""
    follows: int = 0
    """The epoch of the leader whose journal this one copies (its own epoch while it leads)."""
    buffer: dict[int, Entry] = field(default_factory=dict)
    dispatcher: CommandDispatcher | None = None

    def unfinished(self) -> list[Command]:
        accepted: dict[str, Command] = {}
        for entry in self.journal:
            if entry.command is not None:
                accepted[entry.command.command_id] = entry.command
            else:
                accepted.pop(entry.outcome_of, None)
        return list(accepted.values())

    def receive(self, entry: Entry) -> None:
        """A journal entry from the leader: applied in order, only from the leader it follows."""
        if not self.alive or entry.epoch != self.follows or entry.index < len(self.journal):
            return
        self.buffer[entry.index] = entry
        while len(self.journal) in self.buffer:
            self.journal.append(self.buffer.pop(len(self.journal)))


class World:
    def __init__(self, tmp: Path, seed: int, late_standby: bool) -> None:
        self.clock = FakeClock()
        self.seed = seed
        self.ids = itertools.count()
        self.agents = {a: Agent(a, str(tmp / f'{a}.sqlite'), self.clock) for a in AGENTS}
        self.replicas = (Replica('A'), Replica('B'))
        self.next_epoch = 1
        self.leader: Replica | None = None
        self.last_leader: Replica | None = None
        self.to_agents: list[Command] = []
        self.to_shard: list[Ack] = []
        self.to_standby: list[Entry] = []
        self.submissions: list[Submission] = []
        self.announcements: list[Announcement] = []
        self.runs: list[Run] = []
        self.replicas[0].alive = True
        self.replicas[1].alive = not late_standby
        self.lead(self.replicas[0], heard=True)

    # -- replicas ------------------------------------------------------------------------------------------------

    def standby(self) -> Replica | None:
        return next((r for r in self.replicas if r.alive and r is not self.leader), None)

    def caught_up(self, replica: Replica) -> bool:
        """Holds everything the last leader journaled (it knows the high-water mark from that leader's leases)."""
        last = self.last_leader
        if last is None or replica is last:
            return True
        return replica.follows == last.follows and len(replica.journal) == len(last.journal)

    def lead(self, replica: Replica, *, heard: bool, fenced_at_once: bool = False) -> None:
        """`replica` wins an election with a new, unique epoch and adopts every unfinished command it journaled.
        Without the agents' heartbeats (`heard` False) it numbers commands from 1, below what agents applied."""
        epoch = self.next_epoch
        self.next_epoch += 1
        base = {a: agent.intake.last_applied_seq if heard else 0 for a, agent in self.agents.items()}
        dispatcher = CommandDispatcher(
            site_id='s',
            shard_id='z',
            agents=AGENTS,
            epoch=epoch,
            settings=DISPATCH,
            clock=self.clock,
            rng=random.Random(self.seed + epoch),
            id_factory=lambda: f'c{next(self.ids)}',
            seq_base=base,
        )
        dispatcher.adopt(replica.unfinished())
        if fenced_at_once:
            # The loser of an election race: its deliveries are on the wire before it sees the winner's lease.
            self.to_agents.extend(dispatcher.take().sends)
            return
        replica.dispatcher = dispatcher
        replica.follows = epoch
        replica.buffer.clear()
        self.leader = self.last_leader = replica
        for agent in self.agents.values():
            agent.lease_epoch = epoch
        self.drain()

    def journal(self, entry_command: Command | None = None, outcome_of: str = '') -> None:
        leader = self.leader
        assert leader is not None and leader.dispatcher is not None
        entry = Entry(leader.dispatcher.epoch, len(leader.journal), entry_command, outcome_of)
        leader.journal.append(entry)
        self.to_standby.append(entry)

    def drain(self) -> None:
        leader = self.leader
        if leader is None or leader.dispatcher is None:
            return
        assert not leader.dispatcher.fenced, 'the leader stepped down for an ack naming no newer epoch'
        out = leader.dispatcher.take()
        self.to_agents.extend(out.sends)
        for result in out.results:
            self.journal(outcome_of=result.command_id)  # durable before it is announced
            self.announcements.append(
                Announcement(result.command_id, result.agent_id, result.outcome, result.detail, result.stamp)
            )

    def kill(self, replica: Replica) -> None:
        replica.alive = False
        replica.dispatcher = None
        replica.buffer.clear()
        if replica is self.leader:
            self.leader = None

    def start(self, replica: Replica, *, heard: bool) -> None:
        """A dead replica restarts from its durable journal: it leads (cold start) when nobody does and it holds
        everything; otherwise it follows and must take a snapshot before it may lead."""
        replica.alive = True
        if self.leader is None and self.caught_up(replica):
            self.lead(replica, heard=heard)

    # -- the wire -----------------------------------------------------------------------------------------------

    def submit(self, n: int, ttl: float, priority: Priority) -> None:
        leader = self.leader
        if leader is None or leader.dispatcher is None:
            return  # no leader: the submitter is refused (and retries later)
        kind = 'stop' if priority == Priority.SAFETY else 'noop'
        commands = leader.dispatcher.submit(list(AGENTS[:n]), kind, '{}', priority, ttl)
        for command in commands:
            self.journal(command)  # durable before the submitter is answered
            self.submissions.append(Submission(command.command_id, command.agent_id, command.deadline))
        self.drain()

    def deliver(self, command: Command) -> None:
        agent = self.agents[command.agent_id]
        fence = agent.intake.highest_epoch
        decision = agent.intake.receive(command)
        if decision.execute:
            run = Run(command, self.clock(), fence)
            self.runs.append(run)
            agent.running.append(run)
        self.to_shard.append(decision.ack)

    def ack(self, ack: Ack) -> None:
        if self.leader is not None and self.leader.dispatcher is not None:
            self.leader.dispatcher.on_ack(ack)
            self.drain()

    def finish(self, agent_id: str, success: bool) -> None:
        agent = self.agents[agent_id]
        if agent.running:
            run = agent.running.pop(0)
            status = AckStatus.SUCCEEDED if success else AckStatus.FAILED
            self.to_shard.append(agent.intake.complete(run.command, status))
            run.result = ExecResult.SUCCEEDED if success else ExecResult.FAILED
            run.finished_at = self.clock()

    def crash_agent(self, agent_id: str) -> None:
        agent = self.agents[agent_id]
        for run in agent.running:
            run.result = ExecResult.INTERRUPTED
        agent.intake.close()
        agent.boot()

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.leader is not None and self.leader.dispatcher is not None:
            self.leader.dispatcher.tick()
            self.drain()

    # -- the end ------------------------------------------------------------------------------------------------

    def quiesce(self) -> None:
        """Everyone back, everything delivered in order, all work finished, every deadline long passed."""
        if self.leader is None:
            order = sorted(self.replicas, key=lambda r: r is not self.last_leader)
            for replica in order:
                if not replica.alive:
                    self.start(replica, heard=True)
        assert self.leader is not None
        for agent in self.agents.values():
            agent.intake.observe_epoch(agent.lease_epoch)
        for _ in range(40):
            commands, self.to_agents = self.to_agents, []
            for command in commands:
                self.deliver(command)
            for agent_id in AGENTS:
                while self.agents[agent_id].running:
                    self.finish(agent_id, True)
            acks, self.to_shard = self.to_shard, []
            for ack in acks:
                self.ack(ack)
            self.tick(0.5)

    def verdict_text(self) -> str:
        verdict = check_history(
            announcements=self.announcements,
            executions=[run.record() for run in self.runs],
            submissions=self.submissions,
            tolerance_sec=0.0,
        )
        return verdict.render()


T = TypeVar('T')


def pick(queue: list[T], index: int, keep: bool) -> T:
    return queue[index % len(queue)] if keep else queue.pop(index % len(queue))


action = st.one_of(
    st.tuples(st.just('submit'), st.integers(0, 3), st.sampled_from([0.5, 2.0, 8.0]), st.sampled_from(list(Priority))),
    st.tuples(st.just('deliver'), st.integers(0, 50), st.booleans()),  # which one, keep a duplicate on the wire
    st.tuples(st.just('ack'), st.integers(0, 50), st.booleans()),
    st.tuples(st.just('drop'), st.integers(0, 50)),
    st.tuples(st.just('flush'), st.booleans(), st.booleans()),  # the wire catches up: duplicated, reversed
    st.tuples(st.just('journal'), st.integers(0, 50), st.booleans()),  # which entry, lost
    st.tuples(st.just('finish'), st.sampled_from(AGENTS), st.booleans()),
    st.tuples(st.just('time'), st.sampled_from([0.05, 0.3, 1.0, 3.0])),
    st.tuples(st.just('crash_agent'), st.sampled_from(AGENTS)),
    st.tuples(st.just('lease'), st.sampled_from(AGENTS)),
    st.tuples(st.just('snapshot')),
    st.tuples(st.just('kill_leader'), st.booleans()),  # heard the agents' heartbeats before leading
    st.tuples(st.just('kill_standby')),
    st.tuples(st.just('start_replica'), st.booleans()),
    st.tuples(st.just('power_cycle'), st.booleans(), st.booleans()),  # heard, election race
)


def step(world: World, move: tuple[Any, ...]) -> None:
    kind = move[0]
    if kind == 'submit':
        world.submit(move[1], move[2], move[3])
    elif kind == 'deliver' and world.to_agents:
        world.deliver(pick(world.to_agents, move[1], move[2]))
    elif kind == 'ack' and world.to_shard:
        world.ack(pick(world.to_shard, move[1], move[2]))
    elif kind == 'flush':
        # Everything on the wire arrives at once (the link came back), each command possibly twice, acks in order
        # or reversed.
        commands, world.to_agents = world.to_agents, []
        for command in commands + (commands if move[1] else []):
            world.deliver(command)
        acks, world.to_shard = world.to_shard, []
        for ack in reversed(acks) if move[2] else acks:
            world.ack(ack)
    elif kind == 'drop':
        queue = world.to_agents if move[1] % 2 else world.to_shard
        if queue:
            queue.pop(move[1] % len(queue))
    elif kind == 'journal' and world.to_standby:
        entry = world.to_standby.pop(move[1] % len(world.to_standby))
        standby = world.standby()
        if not move[2] and standby is not None:
            standby.receive(entry)
    elif kind == 'finish':
        world.finish(move[1], move[2])
    elif kind == 'time':
        world.tick(move[1])
    elif kind == 'crash_agent':
        world.crash_agent(move[1])
    elif kind == 'lease':
        agent = world.agents[move[1]]
        agent.intake.observe_epoch(agent.lease_epoch)
    elif kind == 'snapshot':
        standby, leader = world.standby(), world.leader
        if standby is not None and leader is not None:
            standby.journal, standby.follows = list(leader.journal), leader.follows
            standby.buffer.clear()
    elif kind == 'kill_leader' and world.leader is not None:
        world.kill(world.leader)
        standby = world.standby()
        if standby is not None and world.caught_up(standby):
            world.lead(standby, heard=move[1])
    elif kind == 'kill_standby':
        standby = world.standby()
        if standby is not None:
            world.kill(standby)
    elif kind == 'start_replica':
        dead = next((r for r in world.replicas if not r.alive), None)
        if dead is not None:
            world.start(dead, heard=move[1])
    elif kind == 'power_cycle':
        # Both replicas lost (a site server's power cycle), then both restart from their journals. In a race both
        # eligible replicas win an election; the lower epoch's deliveries go out before it is fenced.
        for replica in world.replicas:
            world.kill(replica)
        eligible = [r for r in world.replicas if world.caught_up(r)]
        if move[2] and len(eligible) == 2:
            world.lead(eligible[1], heard=move[1], fenced_at_once=True)
        for replica in world.replicas:
            world.start(replica, heard=move[1])


SHM = Path('/dev/shm')


@settings(max_examples=300, deadline=None)
@given(st.lists(action, min_size=30, max_size=100), st.integers(0, 2**16), st.booleans())
def test_every_outcome_tells_the_truth_about_what_ran(moves, seed, late_standby):
    # The agents' stores live in memory-backed files where there are some: hundreds of worlds, each with stores
    # reopened after crashes, would otherwise wait on the disk of a loaded machine.
    with tempfile.TemporaryDirectory(dir=SHM if SHM.is_dir() else None) as tmp:
        world = World(Path(tmp), seed, late_standby)
        try:
            for move in moves:
                step(world, move)
            world.quiesce()
            verdict = world.verdict_text()
            assert verdict == '', verdict
            assert world.leader is not None and world.leader.dispatcher is not None
            assert not world.leader.dispatcher.pending()
        finally:
            for agent in world.agents.values():
                agent.intake.close()

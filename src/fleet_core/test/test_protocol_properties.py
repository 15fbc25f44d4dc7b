"""Property tests of the whole command protocol (dispatcher + network + agent intake + dedup store) over
arbitrary interleavings: duplicates, reordering, drops, delays past deadlines, agent restarts, failovers."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FakeClock
from fleet_core.config import DispatchSettings, IntakeSettings
from fleet_core.dedup_store import DedupStore
from fleet_core.dispatcher import CommandDispatcher
from fleet_core.intake import CommandIntake
from fleet_core.kinds import KindRegistry
from fleet_core.model import Ack, AckStatus, Command, Priority

AGENTS = ('r1', 'r2', 'r3')
SEQ_GAP = 1000


@dataclass
class Agent:
    agent_id: str
    path: str
    clock: FakeClock
    intake: CommandIntake = field(init=False)
    running: list[Command] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boot()

    def boot(self) -> None:
        self.intake = CommandIntake(
            agent_id=self.agent_id,
            shard_id='z',
            store=DedupStore(self.path),
            kinds=KindRegistry(),
            settings=IntakeSettings(clock_skew_tolerance_sec=0.0),
            clock=self.clock,
        )
        self.running = []


@dataclass
class World:
    clock: FakeClock
    agents: dict[str, Agent]
    leader: CommandDispatcher
    zombie: CommandDispatcher | None = None
    to_agents: list[Command] = field(default_factory=list)
    to_leader: list[Ack] = field(default_factory=list)
    executions: dict[tuple[str, str], int] = field(default_factory=dict)
    late_starts: list[str] = field(default_factory=list)
    fenced_runs: list[str] = field(default_factory=list)
    announced_epoch: int = 1
    results: dict[str, list[str]] = field(default_factory=dict)
    submitted: set[str] = field(default_factory=set)

    def drain(self, dispatcher: CommandDispatcher) -> None:
        out = dispatcher.take()
        self.to_agents.extend(out.sends)
        if dispatcher is self.leader:
            for r in out.results:
                self.results.setdefault(r.command_id, []).append(r.outcome.name)

    def deliver_command(self, command: Command) -> None:
        agent = self.agents[command.agent_id]
        decision = agent.intake.receive(command)
        if decision.execute:
            key = (command.agent_id, command.command_id)
            self.executions[key] = self.executions.get(key, 0) + 1
            if self.clock() > command.deadline:
                self.late_starts.append(command.command_id)
            if command.epoch < self.announced_epoch:
                self.fenced_runs.append(command.command_id)
            agent.running.append(command)
        self.to_leader.append(decision.ack)

    def finish_one(self, agent_id: str, success: bool) -> None:
        agent = self.agents[agent_id]
        if agent.running:
            command = agent.running.pop(0)
            status = AckStatus.SUCCEEDED if success else AckStatus.FAILED
            self.to_leader.append(agent.intake.complete(command, status))


def new_dispatcher(clock: FakeClock, epoch: int, ids: itertools.count[int], seed: int, base=None) -> CommandDispatcher:
    return CommandDispatcher(
        site_id='s',
        shard_id='z',
        agents=AGENTS,
        epoch=epoch,
        settings=DispatchSettings(retry_initial_sec=0.2, retry_max_sec=1.0, retry_budget=4, deadline_grace_sec=0.5),
        clock=clock,
        rng=random.Random(seed),
        id_factory=lambda: f'c{next(ids)}',
        seq_base=base,
    )


action = st.one_of(
    st.tuples(st.just('submit'), st.integers(0, 3), st.sampled_from([0.5, 2.0, 8.0]), st.sampled_from(list(Priority))),
    st.tuples(st.just('deliver'), st.integers(0, 50), st.booleans()),  # index, keep a duplicate in flight
    st.tuples(st.just('ack'), st.integers(0, 50), st.booleans()),
    st.tuples(st.just('drop'), st.integers(0, 50)),
    st.tuples(st.just('finish'), st.sampled_from(AGENTS), st.booleans()),
    st.tuples(st.just('time'), st.sampled_from([0.05, 0.3, 1.0, 3.0])),
    st.tuples(st.just('restart'), st.sampled_from(AGENTS)),
    st.tuples(st.just('failover')),
    st.tuples(st.just('zombie')),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(action, min_size=1, max_size=80), st.integers(0, 2**16))
def test_at_most_once_never_late_exactly_one_outcome(tmp_path_factory, actions, seed):
    clock = FakeClock()
    ids = itertools.count()
    tmp = tmp_path_factory.mktemp('world')
    agents = {a: Agent(a, str(tmp / f'{a}.sqlite'), clock) for a in AGENTS}
    world = World(clock, agents, new_dispatcher(clock, 1, ids, seed))
    epoch = 1
    rng = random.Random(seed)

    for step in actions:
        kind = step[0]
        if kind == 'submit':
            _, n, ttl, priority = step
            targets = list(AGENTS[:n]) if n else []
            kind_name = 'stop' if priority == Priority.SAFETY else 'noop'
            commands = world.leader.submit(targets, kind_name, '{}', priority, ttl)
            world.submitted.update(c.command_id for c in commands)
        elif kind == 'deliver' and world.to_agents:
            index = step[1] % len(world.to_agents)
            command = world.to_agents[index] if step[2] else world.to_agents.pop(index)
            world.deliver_command(command)
        elif kind == 'ack' and world.to_leader:
            index = step[1] % len(world.to_leader)
            ack = world.to_leader[index] if step[2] else world.to_leader.pop(index)
            world.leader.on_ack(ack)
        elif kind == 'drop':
            queue = world.to_agents if step[1] % 2 else world.to_leader
            if queue:
                queue.pop(step[1] % len(queue))
        elif kind == 'finish':
            world.finish_one(step[1], step[2])
        elif kind == 'time':
            clock.advance(step[1])
            world.leader.tick()
            if world.zombie is not None:
                world.zombie.tick()
        elif kind == 'restart':
            agents[step[1]].intake.close()  # crash: running executions are lost
            agents[step[1]].boot()
        elif kind == 'failover':
            # The standby's hot copy is the leader's pending set; the old leader may live on as a zombie.
            old = world.leader
            epoch += 1
            base = {a: old.last_seq(a) + SEQ_GAP for a in AGENTS}
            world.leader = new_dispatcher(clock, epoch, ids, seed + epoch, base)
            world.leader.adopt(old.pending())
            world.zombie = old if rng.random() < 0.5 else None
            # The new leader's latched lease reaches every agent: from now on the old epoch is fenced.
            world.announced_epoch = epoch
            for agent in agents.values():
                agent.intake.observe_epoch(epoch)
        elif kind == 'zombie' and world.zombie is not None:
            world.zombie.tick()
            world.zombie.submit([], 'noop', '{}', Priority.NORMAL, 5.0)
        world.drain(world.leader)
        if world.zombie is not None:
            world.drain(world.zombie)

    # Quiesce: deliver everything in order, finish all work, let every deadline pass.
    for _ in range(40):
        for command in world.to_agents:
            world.deliver_command(command)
        world.to_agents.clear()
        for agent_id in AGENTS:
            while agents[agent_id].running:
                world.finish_one(agent_id, True)
        for ack in world.to_leader:
            world.leader.on_ack(ack)
        world.to_leader.clear()
        clock.advance(0.5)
        world.leader.tick()
        world.drain(world.leader)
        if world.zombie is not None:
            world.zombie.take()  # a fenced zombie's traffic no longer reaches anyone

    assert all(count == 1 for count in world.executions.values()), world.executions
    assert world.late_starts == []
    assert world.fenced_runs == []
    for command_id in world.submitted:
        assert len(world.results.get(command_id, [])) == 1, (command_id, world.results.get(command_id))
    assert not world.leader.pending()

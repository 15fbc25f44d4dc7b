"""Replay: a simulated shard run (real CommandDispatcher, simulated agents with loss and slowness) is recorded to
MCAP with the orchestrator's topic layout, then `fleetctl replay` must reproduce every decision."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fleet_cli.main import main as fleetctl
from fleet_core.config import DispatchSettings
from fleet_core.dispatcher import CommandDispatcher
from fleet_core.model import Ack, AckStatus, Command, Priority
from fleet_core.trace import Hop, TraceRecord, TraceSampler, TraceSettings
from fleet_observability.recorder import McapFleetWriter, read_recording
from fleet_observability.replay import replay_shard
from fleet_observability.replay_loader import load_shard_recordings

SITE, SHARD = 'site_a', 'zone_1'
AGENTS = ('r001', 'r002', 'r003', 'r004', 'r005')
T0 = 1_700_000_000.0
SEED = 7
SETTINGS = DispatchSettings(retry_initial_sec=0.2, retry_max_sec=0.8, retry_budget=3, deadline_grace_sec=0.3)
RECORDER_LAG = 0.0004
Unrecorded = Callable[[str, int], bool]
"""(topic, n-th message on it, from 1) -> True when the recorder did not get that message."""


def _all_recorded(topic: str, n: int) -> bool:
    return False


@dataclass(order=True)
class _Event:
    at: float
    order: int
    kind: str = field(compare=False)
    payload: Any = field(compare=False, default=None)


class SimulatedShard:
    """Drives a CommandDispatcher the way the orchestrator node does and writes what the node would publish."""

    def __init__(self, writer: McapFleetWriter, unrecorded: Unrecorded = _all_recorded) -> None:
        from rclpy.serialization import serialize_message

        self._ser = serialize_message
        self.writer = writer
        self._unrecorded = unrecorded
        self._written: dict[str, int] = {}
        self.now = T0
        self.dispatcher = CommandDispatcher(
            site_id=SITE, shard_id=SHARD, agents=AGENTS, epoch=1, settings=SETTINGS, clock=lambda: self.now,
            rng=random.Random(SEED),
        )  # fmt: skip
        self.sampler = TraceSampler(TraceSettings(sample_fraction=0.0))
        self.events: list[_Event] = []
        self._order = 0
        self.deliveries: dict[str, int] = {}

    def at(self, when: float, kind: str, payload: Any = None) -> None:
        self._order += 1
        heapq.heappush(self.events, _Event(when, self._order, kind, payload))

    def write(self, topic: str, type_name: str, msg: Any) -> None:
        n = self._written[topic] = self._written.get(topic, 0) + 1
        if self._unrecorded(topic, n):
            return
        self.writer.write(topic, type_name, bytes(self._ser(msg)), int((self.now + RECORDER_LAG) * 1e9))

    def flush(self) -> None:
        from fleet_interfaces.msg import CommandOutcomes
        from fleet_ros.convert import command_to_msg, result_to_msg
        from fleet_ros.trace_msgs import trace_to_msg

        out = self.dispatcher.take()
        for command in out.sends:
            self.write(f'/{SITE}/{command.agent_id}/command', 'fleet_interfaces/msg/Command', command_to_msg(command))
            self.agent_receives(command)
        if out.results:
            outcomes = CommandOutcomes(outcomes=[result_to_msg(result) for result in out.results])
            self.write(f'/fleet/{SITE}/{SHARD}/outcome', 'fleet_interfaces/msg/CommandOutcomes', outcomes)
        for hop in out.hops:
            record = TraceRecord(hop.command_id, hop.trace_id, hop.agent_id, SHARD, 'orch', Hop[hop.hop], hop.stamp,
                                 max(0, hop.attempt), hop.status, hop.detail)  # fmt: skip
            for kept in self.sampler.offer(record, hop.priority):
                self.write(f'/fleet/{SITE}/{SHARD}/trace', 'fleet_interfaces/msg/TraceEvent', trace_to_msg(kept))

    def agent_receives(self, command: Command) -> None:
        n = self.deliveries[command.command_id] = self.deliveries.get(command.command_id, 0) + 1
        agent = command.agent_id
        if agent == 'r004':
            return  # unreachable: retries run out -> FAILED
        if agent == 'r003' and n == 1:
            return  # first delivery lost -> one retry
        if agent == 'r005':
            self.at(self.now + 0.01, 'ack', Ack.for_command(command, AckStatus.ACCEPTED, stamp=self.now))
            return  # accepts, never finishes -> FAILED (outcome unknown at the deadline)
        slow = 0.35 if agent == 'r002' else 0.02  # r002 is slower than the first retry
        self.at(self.now + 0.005, 'ack', Ack.for_command(command, AckStatus.ACCEPTED, stamp=self.now))
        self.at(self.now + slow, 'ack', Ack.for_command(command, AckStatus.SUCCEEDED, stamp=self.now))

    def submit(self, agents: list[str], kind: str, ttl: float, priority: Priority = Priority.NORMAL) -> None:
        from fleet_ros.convert import command_to_msg

        for command in self.dispatcher.submit(agents, kind, '{}', priority, ttl, ''):
            self.write(f'/fleet/{SITE}/{SHARD}/journal', 'fleet_interfaces/msg/Command', command_to_msg(command))
        self.flush()

    def run(self, until: float) -> None:
        from fleet_ros.convert import ack_to_msg

        tick = T0 + 0.013  # tick phase unrelated to submission times
        while tick < until:
            self.at(tick, 'tick')
            tick += 0.05
        while self.events:
            event = heapq.heappop(self.events)
            self.now = event.at
            if event.kind == 'tick':
                self.dispatcher.tick()
                self.flush()
            elif event.kind == 'submit':
                self.submit(*event.payload)
            else:
                self.write(f'/fleet/{SITE}/{SHARD}/ack', 'fleet_interfaces/msg/CommandAck', ack_to_msg(event.payload))
                self.dispatcher.on_ack(event.payload)
                self.flush()


def record_mission(path: Path, unrecorded: Unrecorded = _all_recorded) -> SimulatedShard:
    writer = McapFleetWriter(path)
    sim = SimulatedShard(writer, unrecorded)
    sim.at(T0 + 0.001, 'submit', (list(AGENTS), 'noop', 2.0))
    sim.at(T0 + 0.402, 'submit', (['r001', 'r002'], 'noop', 5.0, Priority.HIGH))
    sim.at(T0 + 0.9, 'submit', (['r001'], 'noop', 5.0, Priority.SAFETY))
    sim.run(until=T0 + 4.0)
    writer.close()
    return sim


def test_recorded_mission_replays_with_every_decision_matching(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / 'mission.mcap'
    sim = record_mission(path)
    stats = sim.dispatcher.stats()
    # the scenario exercises every decision kind
    assert (stats.succeeded, stats.failed, stats.expired) == (6, 2, 0)
    assert stats.retries >= 3

    shards = load_shard_recordings(read_recording(path))
    (report,) = replay_shard(shards[(SITE, SHARD)], settings=SETTINGS, agents=AGENTS, seed=SEED)
    assert report.mismatches == ()
    assert report.ok, report.render()
    assert (report.commands, report.submissions) == (8, 3)
    assert report.sends_recorded == report.sends_replayed > 8

    cfg = tmp_path / 'fleet.yaml'
    cfg.write_text(
        f'sites: {{{SITE}: {{shards: {{{SHARD}: {{agents: {list(AGENTS)}}}}}}}}}\n'
        'dispatch: {retry_initial_sec: 0.2, retry_max_sec: 0.8, retry_budget: 3, deadline_grace_sec: 0.3}\n'
        'intake: {accept_ack_delay_sec: 0.1}\n'
    )
    assert fleetctl(['--config', str(cfg), 'replay', str(path), '--seed', str(SEED)]) == 0
    out = capsys.readouterr().out
    assert 'outcomes 8/8 match' in out
    assert out.strip().endswith('replay: all decisions match')


def test_a_recording_that_began_after_the_first_sends_replays_the_rest(tmp_path: Path) -> None:
    """The recorder matched each agent's command topic only after the first submission was sent to it (the journal,
    acks and outcomes of that submission were recorded): the seqs come from the outcomes, and the sends before the
    recording are counted, not compared. A send missing after the agent's first recorded one still differs."""

    def first_sends(topic: str, n: int) -> bool:
        return topic.endswith('/command') and n == 1

    late = tmp_path / 'late.mcap'
    record_mission(late, first_sends)
    (report,) = replay_shard(
        load_shard_recordings(read_recording(late))[(SITE, SHARD)], settings=SETTINGS, agents=AGENTS, seed=SEED
    )
    assert report.mismatches == ()
    assert report.ok, report.render()
    assert report.sends_before_recording == len(AGENTS)
    assert report.sends_replayed == report.sends_recorded + len(AGENTS)
    assert f'{len(AGENTS)} replayed send(s) came before the recording began (not compared)' in report.render()

    gap = tmp_path / 'gap.mcap'
    record_mission(gap, lambda topic, n: first_sends(topic, n) or (topic == f'/{SITE}/r001/command' and n == 3))
    (report,) = replay_shard(
        load_shard_recordings(read_recording(gap))[(SITE, SHARD)], settings=SETTINGS, agents=AGENTS, seed=SEED
    )
    assert report.mismatches == ()
    assert not report.sends_match, report.render()


def test_replay_detects_a_different_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / 'mission.mcap'
    record_mission(path)
    cfg = tmp_path / 'fleet.yaml'
    # a smaller retry budget than the recorded run: the unreachable agent fails one delivery earlier
    cfg.write_text(
        f'sites: {{{SITE}: {{shards: {{{SHARD}: {{agents: {list(AGENTS)}}}}}}}}}\n'
        'dispatch: {retry_initial_sec: 0.2, retry_max_sec: 0.8, retry_budget: 2, deadline_grace_sec: 0.3}\n'
        'intake: {accept_ack_delay_sec: 0.1}\n'
    )
    assert fleetctl(['--config', str(cfg), 'replay', str(path), '--seed', str(SEED)]) == 1
    out = capsys.readouterr().out
    assert 'MISMATCH' in out
    assert 'r004' in out
    assert out.strip().endswith('replay: decisions DIFFER from the recording')


@pytest.mark.parametrize('kind', ['truncated', 'foreign', 'no-journal'])
def test_replay_bad_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    path = tmp_path / 'bad.mcap'
    if kind == 'truncated':
        record_mission(path)
        path.write_bytes(path.read_bytes()[:-300])
    elif kind == 'foreign':
        path.write_text('timestamp,value\n1,2\n')
    else:
        writer = McapFleetWriter(path)
        writer.close()
    assert fleetctl(['replay', str(path)]) == 2
    err = capsys.readouterr().err
    expected = {
        'truncated': 'truncated or corrupt MCAP',
        'foreign': 'not an MCAP file',
        'no-journal': 'no shard journal',
    }
    assert expected[kind] in err

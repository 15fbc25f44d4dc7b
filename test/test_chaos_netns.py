"""Chaos across real network namespaces: a central host (orchestrator + standby per shard, the operator probe) and
two robot hosts (simulated agents) joined by veth links; DDS discovers over the links with ROS_STATIC_PEERS and
discovery range LOCALHOST (no multicast anywhere). While the inspection runs, the robot hosts' links are cut and
restored repeatedly, a shard leader is SIGKILLed, and a robot host process is SIGKILLed and restarted on its store.

Asserted: no command executed twice, none started after its deadline (from the hosts' execution logs), every
journaled command has exactly one terminal outcome, and the mission completes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_core.config import load_fleet_config
from fleet_sim.execlog import audit, read_records
from fleet_sim.netns import NetnsTopology, can_create_namespaces
from fleet_sim.summary import tally_outcomes
from harness.processes import ManagedProcess, wait_exit
from harness.wait import wait_for

pytestmark = [pytest.mark.system, pytest.mark.netns]

_SKIP = can_create_namespaces()
ROBOT_HOSTS = ('r1', 'r2')
FLEET_YAML = """
sites:
  site_a:
    shards:
      zone_1: {agents: {prefix: c1_r, count: 4}}
      zone_2: {agents: {prefix: c2_r, count: 4}}
health: {heartbeat_period_sec: 0.5, missed_heartbeats_lost: 4}
# Discovery through static peers can take seconds: a standby must see the live leader's lease before it may lead.
leadership: {first_lease_wait_sec: 8.0}
"""


class ChaosRig:
    """Namespaces and every process of one run; `close()` stops the processes by PID, then deletes the namespaces."""

    def __init__(self, tmp: Path, domain_id: int) -> None:
        self.tmp = tmp
        self.config = tmp / 'fleet.yaml'
        self.config.write_text(FLEET_YAML)
        self.fleet = load_fleet_config(self.config)
        self.topology = NetnsTopology(f'fl{os.getpid() % 100000}', ROBOT_HOSTS, 100 + os.getpid() % 100)
        self.env = self.topology.env(os.environ, domain_id)
        self.procs: list[ManagedProcess] = []
        self.orchestrators: dict[str, ManagedProcess] = {}
        self.hosts: dict[str, ManagedProcess] = {}
        self.progress = tmp / 'progress.jsonl'
        self.result = tmp / 'result.json'

    def start(self, host: str, argv: list[str], name: str) -> ManagedProcess:
        proc = ManagedProcess(self.topology.command(host, argv), env=self.env, name=name)
        self.procs.append(proc)
        return proc

    def start_orchestrator(self, site: str, shard: str, role: str) -> None:
        orchestrator_id = f'{site}.{shard}.{"a" if role == "orchestrator" else "b"}'
        self.orchestrators[orchestrator_id] = self.start(
            'central',
            [
                'shard_orchestrator',
                '--ros-args',
                '-r',
                f'__node:={role}',
                '-r',
                f'__ns:=/{site}/{shard}',
                '-p',
                f'fleet_config:={self.config}',
                '-p',
                f'site_id:={site}',
                '-p',
                f'shard_id:={shard}',
                '-p',
                f'orchestrator_id:={orchestrator_id}',
            ],
            orchestrator_id,
        )

    def agents_of(self, host: str) -> list[str]:
        index = ROBOT_HOSTS.index(host)
        return [a for s in self.fleet.shards for i, a in enumerate(s.agents) if i % len(ROBOT_HOSTS) == index]

    def start_host(self, host: str) -> None:
        agents = ','.join(self.agents_of(host))
        self.hosts[host] = self.start(
            host,
            [
                'fleet_sim_host',
                '--ros-args',
                '-r',
                f'__ns:=/sim/{host}',
                '-p',
                f'fleet_config:={self.config}',
                '-p',
                f'agent_ids:=[{agents}]',
                '-p',
                f'host_name:={host}',
                '-p',
                f'store_dir:={self.tmp / host}',
                '-p',
                f'exec_log:={self.tmp / f"exec-{host}.jsonl"}',
                '-p',
                'odom_rate_hz:=1.0',
            ],
            f'sim-{host}',
        )

    def last_progress(self) -> dict[str, object]:
        if not self.progress.exists():
            return {}
        lines = self.progress.read_text().splitlines()
        try:
            return json.loads(lines[-1]) if lines else {}
        except ValueError:
            return json.loads(lines[-2]) if len(lines) > 1 else {}

    def share_done(self) -> float:
        p = self.last_progress()
        return p['points_done'] / p['points_total'] if p.get('points_total') else 0.0  # type: ignore[operator]  # progress records are JSON (values typed object)

    def logs(self) -> str:
        return '\n'.join(f'--- {p.name} (pid {p.pid})\n' + '\n'.join(p.output().splitlines()[-15:]) for p in self.procs)

    def close(self) -> list[str]:
        for proc in reversed(self.procs):
            proc.stop(grace=5.0)
        return self.topology.destroy()


@pytest.fixture
def rig(tmp_path: Path, ros_env: dict[str, str]) -> Iterator[ChaosRig]:
    if _SKIP:
        pytest.skip(_SKIP)
    rig = ChaosRig(tmp_path, int(ros_env['ROS_DOMAIN_ID']))
    rig.topology.create()
    try:
        yield rig
    finally:
        errors = rig.close()
        assert not errors, f'namespaces not removed: {errors}'


def _wait(rig: ChaosRig, condition: object, timeout: float, what: str) -> object:
    probe = rig.procs[0]

    def check() -> object:
        if not probe.alive() and 'finished' not in str(rig.last_progress().get('phase')):
            raise AssertionError(f'the probe exited early ({probe.popen.returncode}):\n{rig.logs()}')
        return condition()  # type: ignore[operator]  # progress records are JSON (values typed object)

    try:
        return wait_for(check, timeout, interval=0.05, what=what)
    except AssertionError as exc:
        raise AssertionError(f'{exc}\n{rig.logs()}') from None


def test_guarantees_hold_under_link_cuts_leader_kill_and_agent_restarts(rig: ChaosRig) -> None:
    probe_argv = [
        'python',
        '-m',
        'fleet_sim.probe',
        '--config',
        str(rig.config),
        '--points',
        '3',
        '--timeout',
        '150',
        '--progress',
        str(rig.progress),
        '--result',
        str(rig.result),
    ]
    rig.start('central', probe_argv, 'probe')
    for host in ROBOT_HOSTS:
        rig.start_host(host)
    for shard in rig.fleet.shards:
        rig.start_orchestrator(shard.site_id, shard.shard_id, 'orchestrator')

    def leaders() -> dict[str, object]:
        return rig.last_progress().get('leaders') or {'none yet': None}  # type: ignore[return-value]  # progress records are JSON (values typed object)

    _wait(rig, lambda: all(leaders().values()), 60, 'a leader on every shard')
    assert {v[0] for v in leaders().values()} == {f'{s.site_id}.{s.shard_id}.a' for s in rig.fleet.shards}  # type: ignore[index]  # progress records are JSON (values typed object)
    for shard in rig.fleet.shards:
        rig.start_orchestrator(shard.site_id, shard.shard_id, 'standby')
    standbys = [p for name, p in rig.orchestrators.items() if name.endswith('.b')]
    _wait(rig, lambda: all('following leader' in p.output() for p in standbys), 60, 'every standby following')
    _wait(rig, lambda: rig.last_progress().get('phase') == 'running', 60, 'every robot online and the mission running')

    # Repeated link cuts of both robot hosts while commands flow (each a few seconds, restored by the test). Each
    # cut lasts until the probe has lost every robot behind it.
    killed: list[ManagedProcess] = []
    restarted_at = 0.0
    for index, (host, at) in enumerate((('r1', 0.1), ('r2', 0.2), ('r1', 0.55))):
        _wait(rig, lambda at=at: rig.share_done() >= at, 90, f'{at:.0%} of the points before cut {index + 1}')
        behind = len(rig.agents_of(host))
        rig.topology.set_link(host, up=False)
        try:
            _wait(
                rig,
                lambda behind=behind: rig.last_progress().get('online', 99) <= rig.fleet.agent_count - behind,  # type: ignore[operator]  # progress records are JSON (values typed object)
                15,
                f'every robot of {host} seen lost',
            )
        finally:
            rig.topology.set_link(host, up=True)
        if index == 0:
            # The leader of zone_1 dies mid-stream: its standby takes over with epoch + 1.
            leader_id, epoch = rig.last_progress()['leaders']['site_a/zone_1']  # type: ignore[index]  # progress records are JSON (values typed object)
            killed.append(rig.orchestrators[leader_id])
            rig.orchestrators[leader_id].kill()
            _wait(rig, lambda e=epoch: rig.last_progress()['leaders']['site_a/zone_1'][1] > e, 20, 'a takeover')  # type: ignore[index]  # progress records are JSON (values typed object)
        if index == 1:
            # A robot host crashes and comes back on its persisted stores.
            killed.append(rig.hosts['r2'])
            rig.hosts['r2'].kill()
            restarted_at = time.time()
            rig.start_host('r2')

    probe = rig.procs[0]
    code = wait_exit(probe, 150)
    result = json.loads(rig.result.read_text())
    assert code == 0 and result['phase'] == 'finished', f'mission did not finish: {result["phase"]}\n{rig.logs()}'

    journal, outcomes = result['journal'], result['outcomes']
    # A new leader re-announces recent outcomes (the same values): only different values for one command violate G3.
    tally = tally_outcomes(journal, {c: [(o[0], o[1], 0.0) for o in recs] for c, recs in outcomes.items()})
    assert not tally.missing, f'commands without a terminal outcome: {list(tally.missing)[:5]}'
    conflicting = {c: outcomes[c] for c in tally.conflicting}
    assert not conflicting, f'commands announced with different outcomes: {list(conflicting.items())[:3]}'
    execution = audit(sorted(rig.tmp.glob('exec-*.jsonl')), tolerance_sec=rig.fleet.intake.clock_skew_tolerance_sec)
    assert execution.executions >= rig.fleet.agent_count * (2 + 3 * 3 + 1), execution
    assert execution.duplicates_executed == 0, f'executed twice: {execution.duplicates}'
    assert execution.stale_executions == 0, f'started after the deadline: {execution.stale}'
    assert result['robots_failed'] == 0 and result['robots_done'] == rig.fleet.agent_count, result['points']
    assert result['points'][0] == result['points'][1]
    # The faults hit the command stream: some deliveries were lost and redelivered.
    assert any(o[0][1] > 1 for c, o in outcomes.items() if c in journal), 'no command needed a redelivery'
    epochs = [lease[2] for lease in result['leases']['site_a/zone_1']]
    assert max(epochs) > min(epochs), 'the killed leader was never replaced'
    # The kills were real (SIGKILL, no orderly shutdown), and the restarted robot host did work again.
    assert [p.popen.returncode for p in killed] == [-signal.SIGKILL, -signal.SIGKILL], [p.name for p in killed]
    after_restart = [r for r in read_records([rig.tmp / 'exec-r2.jsonl']) if r.get('ev') == 'start']
    assert any(float(r['wall']) > restarted_at for r in after_restart), 'the restarted host r2 executed nothing'  # type: ignore[arg-type]  # execution records are JSON (values typed object)

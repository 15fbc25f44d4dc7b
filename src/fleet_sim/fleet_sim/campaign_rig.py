"""The chaos campaign's rig: runs one seed's processes on network-namespace hosts (as root) or as loopback
processes, carries out the schedule's process and link faults, restores everything at the end of the window, and
judges the history the operator process gathered against the robots' execution logs.

Every process is stopped by PID (SIGINT, then SIGKILL), every namespace deleted, also when the seed fails; every
wait is bounded."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from fleet_core.config import FleetConfig, load_fleet_config
from fleet_ros.processes import kill_child, start_child, stop_child
from fleet_sim.campaign import (
    ACTIVE_MARK,
    DRIVER_OPS,
    LINK_OPS,
    Event,
    Schedule,
    SeedResult,
    cold_start_interrupted,
    first_lease_after,
    first_mark_after,
    judge,
    leader_changes,
)
from fleet_sim.netns import NetnsError, NetnsTopology

SITE = 'site_c'
HOSTS = ('r1', 'r2')
POLL_SEC = 0.05
TAKEOVER_WAIT_SEC = 10.0
"""How long a takeover may take before the seed reports that none happened."""
STANDBY_READY_WAIT_SEC = 10.0
"""Before killing a leader: how long to wait for its standby to follow it (a hot standby is what is tested)."""


class CampaignError(RuntimeError):
    """The rig could not run a seed (a process exited early, a wait ran out); the message says which."""


class Proc:
    """A child in its own session with its output in a log file; stopped by PID only."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path, name: str) -> None:
        self.name = name
        self.log = log
        self._out = log.open('ab')
        self.popen = start_child(argv, log=self._out, env=env)
        self.started = time.monotonic()
        self.offset = log.stat().st_size

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """What this start of the process wrote (a restarted process appends to the same log)."""
        self._out.flush()
        with self.log.open('rb') as handle:
            handle.seek(self.offset)
            return handle.read().decode(errors='replace')

    def kill(self) -> None:
        kill_child(self.popen)

    def stop(self, grace: float = 5.0) -> None:
        stop_child(self.popen, grace)
        self._out.close()


@dataclass(frozen=True, slots=True)
class CampaignOptions:
    agents: int = 12
    shards: int = 1
    window_sec: float = 30.0
    rate: float = 1.5
    netns: bool = True
    keep: bool = False
    """Keep the seed's work directory (logs, journals, stores) even when it passed."""


def fleet_yaml(options: CampaignOptions) -> dict[str, Any]:
    per_shard = max(1, options.agents // options.shards)
    return {
        'sites': {
            SITE: {
                'shards': {
                    f'zone_{i + 1}': {'agents': {'prefix': f'z{i + 1}_r', 'count': per_shard}}
                    for i in range(options.shards)
                }
            }
        },
        'health': {'heartbeat_period_sec': 0.5, 'missed_heartbeats_lost': 4},
        'leadership': {'lease_sec': 1.0, 'renew_period_sec': 0.25, 'first_lease_wait_sec': 3.0},
    }


@dataclass
class SeedRig:
    seed: int
    schedule: Schedule
    options: CampaignOptions
    work: Path
    domain_id: int
    log: Callable[[str], None]
    fleet: FleetConfig = field(init=False)
    topology: NetnsTopology | None = field(init=False, default=None)
    procs: list[Proc] = field(default_factory=list)
    replicas: dict[tuple[str, str], Proc] = field(default_factory=dict)
    hosts: dict[str, Proc] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    kills: list[tuple[str, float, int]] = field(default_factory=list)
    """(shard, wall time of the leader kill, the killed leader's epoch)"""
    cold: list[tuple[str, float, int]] = field(default_factory=list)
    """(shard, wall time both replicas were started again, the highest epoch before)"""
    drops: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.config = self.work / 'fleet.yaml'
        self.config.write_text(yaml.safe_dump(fleet_yaml(self.options)))
        self.fleet = load_fleet_config(self.config)
        self.progress = self.work / 'progress.jsonl'
        self.result = self.work / 'result.json'
        self.settled = self.work / 'settled'
        self.exec_dir = self.work / 'exec'
        self.exec_dir.mkdir(exist_ok=True)
        (self.work / 'logs').mkdir(exist_ok=True)
        (self.work / 'schedule.json').write_text(self.schedule.to_json())
        if self.options.netns:
            tag = f'cc{os.getpid() % 10000}s{self.seed % 1000}'
            self.topology = NetnsTopology(tag, HOSTS, 200 + self.seed % 50)
            self.env = self.topology.env(os.environ, self.domain_id)
        else:
            self.env = dict(os.environ)
            self.env.update(
                {'ROS_DOMAIN_ID': str(self.domain_id), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
                 'PYTHONUNBUFFERED': '1'}
            )  # fmt: skip
            self.env.pop('ROS_STATIC_PEERS', None)

    # -- processes ---------------------------------------------------------------------------------------

    def start(self, host: str, argv: list[str], name: str) -> Proc:
        command = self.topology.command(host, argv) if self.topology else argv
        proc = Proc(command, self.env, self.work / 'logs' / f'{name}.log', name)
        self.procs.append(proc)
        return proc

    def shard_keys(self) -> list[str]:
        return [f'{s.site_id}/{s.shard_id}' for s in self.fleet.shards]

    def start_replica(self, shard: str, replica: int) -> None:
        site, shard_id = shard.split('/')
        name = 'ab'[replica]
        orchestrator_id = f'{site}.{shard_id}.{name}'
        argv = [
            'shard_orchestrator',
            '--ros-args',
            '-r',
            f'__node:=orchestrator_{name}',
            '-r',
            f'__ns:=/{site}/{shard_id}',
        ]
        params = {
            'fleet_config': self.config,
            'site_id': site,
            'shard_id': shard_id,
            'orchestrator_id': orchestrator_id,
            'replica_index': replica,
            'state_dir': self.work / 'state' / orchestrator_id,
            'tracing_enabled': 'false',
        }
        for key, value in params.items():
            argv += ['-p', f'{key}:={value}']
        self.replicas[(shard, name)] = self.start('central', argv, orchestrator_id)

    def agents_of(self, host: str) -> list[str]:
        index = HOSTS.index(host)
        return [a for s in self.fleet.shards for i, a in enumerate(s.agents) if i % len(HOSTS) == index]

    def start_host(self, host: str) -> None:
        argv = ['fleet_sim_host', '--ros-args', '-r', f'__ns:=/sim/{host}']
        params = {
            'fleet_config': self.config,
            'agent_ids': f'[{",".join(self.agents_of(host))}]',
            'host_name': host,
            'store_dir': self.work / 'stores' / host,
            'exec_log': self.exec_dir / f'exec-{host}.jsonl',
            'odom_rate_hz': 1.0,
            'seed': self.seed % 100000 + 1,
        }
        for key, value in params.items():
            argv += ['-p', f'{key}:={value}']
        self.hosts[host] = self.start(host if self.topology else 'central', argv, f'host-{host}')

    def start_driver(self) -> Proc:
        argv = [
            sys.executable, '-m', 'fleet_sim.campaign_driver', '--config', str(self.config),
            '--schedule', str(self.work / 'schedule.json'), '--progress', str(self.progress),
            '--result', str(self.result), '--settled', str(self.settled), '--exec-dir', str(self.exec_dir),
            '--rate', str(self.options.rate),
        ]  # fmt: skip
        if not self.topology:
            argv.append('--loopback-cuts')
        self.driver = self.start('central', argv, 'driver')
        return self.driver

    # -- views -------------------------------------------------------------------------------------------

    def last_progress(self) -> dict[str, Any]:
        if not self.progress.exists():
            return {}
        for line in reversed(self.progress.read_text().splitlines()[-3:]):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                return record
        return {}

    def leader(self, shard: str) -> tuple[str, int] | None:
        found = (self.last_progress().get('leaders') or {}).get(shard)
        return (str(found[0]), int(found[1])) if found else None

    def wait(self, condition: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.driver.alive():
                raise CampaignError(f'the driver exited ({self.driver.popen.returncode}) while waiting for {what}')
            if time.monotonic() >= deadline:
                raise CampaignError(f'timed out after {timeout:.0f}s waiting for {what}')
            time.sleep(POLL_SEC)

    def logs_tail(self, lines: int = 12) -> str:
        out = []
        for proc in self.procs:
            tail = proc.log.read_text(errors='replace').splitlines()[-lines:] if proc.log.exists() else []
            out.append(f'--- {proc.name} (pid {proc.popen.pid}, rc {proc.popen.poll()})\n' + '\n'.join(tail))
        return '\n'.join(out)

    # -- faults ------------------------------------------------------------------------------------------

    def carry_out(self, event: Event) -> list[tuple[float, Callable[[], None], str]]:
        """Apply `event` now; returns the restorations to run later (delay, action, description)."""
        if event.op in DRIVER_OPS or (event.op in LINK_OPS and not self.topology):
            return []  # the driver does these on the ROS graph
        if event.op == 'start_standby':
            self.start_replica(event.target, 1)
            return []
        if event.op in LINK_OPS:
            if self.topology is None:
                raise CampaignError(f'{event.op} needs network namespaces (the rig runs without them)')
            host = event.target
            if event.op == 'cut':
                self.topology.set_link(host, up=False)
                return [(event.duration, lambda: self.topology.set_link(host, up=True), f'link of {host} up')]
            direction = 'in' if event.op == 'cut_in' else 'out'
            self.topology.set_drop(host, direction, True)
            self.drops.add((host, direction))
            return [(event.duration, lambda: self._undrop(host, direction), f'{direction} to {host} restored')]
        if event.op == 'kill_host':
            self.hosts[event.target].kill()
            return [(event.duration, lambda: self.start_host(event.target), f'{event.target} restarted')]
        return self._orchestrator_fault(event)

    def _undrop(self, host: str, direction: str) -> None:
        if self.topology is None:
            raise CampaignError('link restore without network namespaces')
        self.topology.set_drop(host, direction, False)
        self.drops.discard((host, direction))

    def _alive_replicas(self, shard: str) -> dict[str, Proc]:
        return {name: p for (s, name), p in self.replicas.items() if s == shard and p.alive()}

    def _orchestrator_fault(self, event: Event) -> list[tuple[float, Callable[[], None], str]]:
        shard = event.target
        alive = self._alive_replicas(shard)
        leader = self.leader(shard)
        leader_name = leader[0].rsplit('.', 1)[1] if leader else ''
        if event.op == 'kill_both':
            if not alive:
                self.notes.append(f'{event.describe()}: skipped, no replica alive')
                return []
            for proc in alive.values():
                proc.kill()
            epoch = leader[1] if leader else 0

            def restart_both() -> None:
                self.cold.append((shard, time.time(), epoch))
                for name in alive:
                    self.start_replica(shard, 'ab'.index(name))

            return [(event.duration, restart_both, f'{shard}: both replicas restarted')]
        if event.op == 'kill_leader':
            if leader is None or leader_name not in alive:
                self.notes.append(f'{event.describe()}: skipped, no live leader known')
                return []
            standby = [p for n, p in alive.items() if n != leader_name]
            if standby:
                try:
                    self.wait(
                        lambda: 'following leader' in standby[0].output(), STANDBY_READY_WAIT_SEC, 'a hot standby'
                    )
                except CampaignError:
                    self.notes.append(f'{event.describe()}: the standby did not report following the leader')
            killed = alive[leader_name]
            killed.kill()
            if standby:
                self.kills.append((shard, time.time(), leader[1]))
            else:
                self.notes.append(f'{event.describe()}: no standby alive; counted as a cold restart')
            index = 'ab'.index(leader_name)

            def restart_leader() -> None:
                if not standby:
                    self.cold.append((shard, time.time(), leader[1]))
                self.start_replica(shard, index)

            return [(event.duration, restart_leader, f'{shard}: killed leader restarted')]
        # kill_standby
        standby_names = [n for n in alive if n != leader_name]
        if not standby_names:
            self.notes.append(f'{event.describe()}: skipped, no standby alive')
            return []
        alive[standby_names[0]].kill()
        index = 'ab'.index(standby_names[0])
        return [(event.duration, lambda: self.start_replica(shard, index), f'{shard}: standby restarted')]

    def restore_all(self) -> None:
        """Every link up, every drop removed, every killed process started again (on its state)."""
        if self.topology is not None:
            for host in HOSTS:
                self.topology.set_link(host, up=True)
            for host, direction in list(self.drops):
                self._undrop(host, direction)
        for host, proc in list(self.hosts.items()):
            if not proc.alive():
                self.start_host(host)
        for (shard, name), proc in list(self.replicas.items()):
            if not proc.alive():
                self.start_replica(shard, 'ab'.index(name))

    # -- the run -----------------------------------------------------------------------------------------

    def run(self) -> SeedResult:
        result = SeedResult(self.seed, self.schedule)
        started = time.monotonic()
        try:
            if self.topology is not None:
                self.topology.create()
            self._run(result)
        except (CampaignError, NetnsError) as exc:
            result.violate('harness', f'{exc}')
            result.notes.append(self.logs_tail())
        finally:
            for proc in reversed(self.procs):
                proc.stop()
            if self.topology is not None:
                for error in self.topology.destroy():
                    result.violate('harness', f'namespace not removed: {error}')
            result.elapsed_s = time.monotonic() - started
        return result

    def _run(self, result: SeedResult) -> None:
        for host in HOSTS:
            self.start_host(host)
        for shard in self.shard_keys():
            self.start_replica(shard, 0)
        self.start_driver()
        self.wait(lambda: all(self.leader(s) for s in self.shard_keys()), 90, 'a leader on every shard')
        for shard in self.shard_keys():
            if not self.schedule.late_standby(shard):
                self.start_replica(shard, 1)
        self.wait(lambda: self.last_progress().get('phase') == 'running', 90, 'every robot online (window start)')
        t0 = time.monotonic()
        actions: list[tuple[float, int, Callable[[], None], str]] = []
        for index, event in enumerate(self.schedule.events):
            actions.append((t0 + event.at, index, partial(self._apply, event, actions, t0), event.describe()))
        end = t0 + self.schedule.window_sec
        while actions:
            actions.sort(key=lambda a: (a[0], a[1]))
            at, _, action, what = actions[0]
            if at > end:
                break
            self._sleep_until(at)
            actions.pop(0)
            self.log(f'seed {self.seed}: {what}')
            action()
        self._sleep_until(end)
        self.restore_all()
        self.settled.touch()
        self.wait(lambda: not self.driver.alive(), 120, 'the driver to gather the history')
        if not self.result.exists():
            raise CampaignError(f'the driver wrote no result (exit {self.driver.popen.returncode})')
        self._judge(json.loads(self.result.read_text()), result)

    def _apply(self, event: Event, actions: list[Any], t0: float) -> None:
        for delay, restore, what in self.carry_out(event):
            actions.append((time.monotonic() + delay, len(actions) + 1000, restore, what))

    def _sleep_until(self, at: float) -> None:
        while (left := at - time.monotonic()) > 0:
            if not self.driver.alive():
                raise CampaignError(f'the driver exited early ({self.driver.popen.returncode})')
            time.sleep(min(POLL_SEC * 2, left))

    def _first_active_after(self, shard: str, since: float) -> float | None:
        """When the first replica of `shard` started after `since` became active (from the replicas' logs)."""
        found = []
        for (of, _name), proc in self.replicas.items():
            if of == shard and proc.log.exists():
                lines = proc.log.read_text(errors='replace').splitlines()
                found.append(first_mark_after(lines, ACTIVE_MARK, since))
        stamps = [t for t in found if t is not None]
        return min(stamps) if stamps else None

    def _judge(self, found: dict[str, Any], result: SeedResult) -> None:
        tolerance = self.fleet.intake.clock_skew_tolerance_sec
        result.add_verdict(judge(found, sorted(self.exec_dir.glob('exec-*.jsonl')), tolerance))
        leases = found['leases']
        result.leader_changes = leader_changes(leases)
        for shard, killed_at, epoch in self.kills:
            takeover = first_lease_after(leases.get(shard, []), killed_at, epoch)
            if takeover is None or takeover > TAKEOVER_WAIT_SEC:
                result.violate('no_takeover', f'{shard}: no new leader within {TAKEOVER_WAIT_SEC}s of the leader kill')
            else:
                result.takeovers_s.append(takeover)
        for shard, restarted_at, epoch in self.cold:
            cold = first_lease_after(leases.get(shard, []), restarted_at, epoch)
            again = [t for s, t, _epoch in self.cold if s == shard and t > restarted_at]
            if cold_start_interrupted(restarted_at, cold, min(again) if again else None):
                result.notes.append(
                    f'{shard}: the cold restart was restarted again {min(again) - restarted_at:.1f}s later, before any '
                    'replica led: not timed (the next restart is)'
                )
            elif cold is None:
                result.violate('no_leader', f'{shard}: no leader after the cold restart')
            else:
                result.cold_starts_s.append(cold)
                active = self._first_active_after(shard, restarted_at)
                if active is not None:
                    result.cold_elections_s.append(restarted_at + cold - active)
        for finding in found['findings']:
            result.violate(finding['kind'], f'{finding["request_id"]}: {finding["detail"]}')
        if found['phase'] != 'finished':
            result.violate(
                'undecided',
                f'driver ended in phase {found["phase"]}: {len(found["pending"])} command(s) still pending, '
                f'{len(found["unqueried"])} never answered for, {found["open_requests"]} request(s) open',
            )
        result.missions = (int(found['missions'][0]), int(found['missions'][1]))
        result.unqueryable = list(found['unqueryable'])
        result.notes.extend(self.notes)
        result.notes.append(f'driver stats: {found["stats"]}')

"""`make demo`: 2 sites x 2 shards of simulated robots with active + standby orchestrators, gateway and Foxglove
server; runs the inspection mission, cuts one robot host's link and SIGKILLs one shard leader midway, then prints a
summary table and one JSON line, and exits 0 only when the guarantees held (measured, not assumed)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import String

from fleet_bringup.nodes import sim_host_groups
from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig
from fleet_ros import qos
from fleet_ros.runtime import RosProgram, ros_program
from fleet_sim.campaign import executions_from_logs
from fleet_sim.execlog import audit
from fleet_sim.faults import FAULT_TOPIC, Fault
from fleet_sim.layout import home_of, inspection_points
from fleet_sim.lifecycle import LifecycleClient, PendingTransition
from fleet_sim.mission_driver import MissionDriver
from fleet_sim.observer import FleetObserver
from fleet_sim.plan import RobotPlan, inspection_steps
from fleet_sim.stack import DemoStack, ros_env, write_scaled_config
from fleet_sim.step_driver import StepDriver
from fleet_sim.summary import (
    InjectedKill,
    build_summary,
    invariant_failures,
    judge_history,
    leader_changes,
    merge_journals,
    read_shard_journals,
    render_table,
    tally_outcomes,
    unexpected_leader_changes,
)

SPIN_SLICE_SEC = 0.02
TICK_SEC = 0.05
PROGRESS_PERIOD_SEC = 2.0
SHARD_JOURNALS = 'state/shards/*/*/*/journal.db'
"""The replicas' shard journals in a run dir (stack.py points FLEETLANES_STATE_DIR at run_dir/state)."""
EXIT_OK, EXIT_VIOLATED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='fleet_sim.demo', description=__doc__)
    parser.add_argument('--robots', type=int, default=200, help='total robots (rescales config/fleet.yaml shards)')
    parser.add_argument('--config-dir', type=Path, default=Path('config'), help='fleet.yaml, params.yaml, sim.yaml')
    parser.add_argument('--points', type=int, default=2, help='inspection points per robot')
    parser.add_argument('--robots-per-host', type=int, default=125, help='simulated robots per host process')
    parser.add_argument('--run-dir', type=Path, default=None, help='logs, stores, recording (default: a new /tmp dir)')
    parser.add_argument('--cut-sec', type=float, default=4.0, help='length of the robot host link cut')
    parser.add_argument('--no-faults', action='store_true', help='skip the link cut and the leader kill')
    parser.add_argument('--no-record', action='store_true', help='do not write an MCAP recording')
    parser.add_argument(
        '--timeout',
        type=float,
        default=105.0,
        help='give up (exit 1) when the mission has not finished this many seconds after it started (bring-up has '
        'bounds of its own: on a loaded host it takes a minute, which must not eat the mission budget)',
    )
    parser.add_argument('--ttl', type=float, default=30.0, help='deadline of each step (submit driver, s)')
    parser.add_argument(
        '--driver',
        choices=('auto', 'action', 'submit'),
        default='auto',
        help='action: one RunMission goal per shard; submit: step by step through the submit service; '
        'auto: the action when every shard serves it',
    )
    return parser.parse_args(argv)


@dataclass(slots=True)
class FaultPlan:
    """The midway faults: cut `host` when `cut_at` of the points are done, kill a leader at `kill_at`."""

    host: str
    kill_shard: tuple[str, str]
    cut_at: float = 0.25
    kill_at: float = 0.45
    cut_sent: float | None = None
    killed_at: float | None = None
    killed_epoch: int = 0
    killed_leader: str = ''


def say(text: str) -> None:
    print(text, flush=True)


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM asked the demo to stop (the runtime's stop request, seen between spin slices)."""


class Demo:
    def __init__(self, args: argparse.Namespace, fleet: FleetConfig, stack: DemoStack, program: RosProgram) -> None:
        self.args = args
        self.fleet = fleet
        self.stack = stack
        self.program = program
        self.context = program.context
        self.executor = program.executor
        self.node = program.add_node(Node('fleet_demo', context=program.context))
        self.observer = FleetObserver(self.node, fleet)
        self.fault_pub = self.node.create_publisher(String, FAULT_TOPIC, qos.EVENTS)
        self.started = time.monotonic()
        self.wall_started = time.time()  # the observer stamps leases with wall time
        self.mission_id = mission_id = str(uuid.uuid4())
        self.plans = {
            agent: RobotPlan(
                agent, inspection_steps(inspection_points(fleet, agent, args.points), home_of(fleet, agent), mission_id)
            )
            for shard in fleet.shards
            for agent in shard.agents
        }
        self.driver: StepDriver | MissionDriver = StepDriver(
            self.node, fleet, self.observer, self.plans, ttl_sec=args.ttl
        )
        points = {
            (shard.site_id, shard.shard_id): [
                p for agent in shard.agents for p in inspection_points(fleet, agent, args.points)
            ]
            for shard in fleet.shards
        }
        self.mission = MissionDriver(self.node, fleet, points, mission_id)
        groups = sim_host_groups(fleet, stack.options)
        cut_host = groups[min(1, len(groups) - 1)][0] if groups else ''
        kill_shard = (
            (fleet.shards[-2].site_id, fleet.shards[-2].shard_id)
            if len(fleet.shards) > 1
            else (fleet.shards[0].site_id, fleet.shards[0].shard_id)
        )
        self.faults = None if args.no_faults else FaultPlan(cut_host, kill_shard)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def spin_until(
        self, condition: Callable[[], object], timeout: float, what: str, tick: Callable[[], object] | None = None
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            # Drain every event that arrives within one tick, then run the periodic work once.
            slice_end = time.monotonic() + TICK_SEC
            while (now := time.monotonic()) < slice_end:
                self.spin_once(slice_end - now)
            if tick is not None:
                tick()
            dead = [
                c
                for c in self.stack.supervisor.exited()
                if c.spec.role in ('sim', 'active', 'standby') and c is not self._killed_child
            ]
            if dead:
                say(f'!! {dead[0].spec.label} exited with {dead[0].popen.returncode}; its log:\n{dead[0].tail()}')
                return False
        say(f'!! timed out after {timeout:.0f}s waiting for {what}')
        return False

    _killed_child = None

    def spin_once(self, timeout_sec: float) -> None:
        """One executor slice; `Interrupted` once a stop was requested (the context is still valid then)."""
        if self.program.stop_requested:
            raise Interrupted(self.program.stop_reason)
        self.executor.spin_once(timeout_sec=timeout_sec)

    # -- phases ------------------------------------------------------------------------------------------

    def bring_up(self, config_dir: Path) -> bool:
        """Start in dependency order so that no start-up burst starves a leader's lease renewals: robots, then
        the leading orchestrators, then gateway/Foxglove/recorder, then the standbys, configured and activated
        through their lifecycle services once they can see the leader's lease."""
        robots = self.fleet.agent_count
        self.stack.start_hosts()
        if not self.spin_until(lambda: self.observer.online() >= robots, 60, f'heartbeats from all {robots} robots'):
            return False
        say(f'[{self.elapsed():5.1f}s] {robots} robots online on {len(self.stack.hosts)} host processes')
        self.stack.start_orchestrators('active')
        if not self.spin_until(self.observer.leaders_ready, 40, 'a leader lease on every shard'):
            return False
        self.stack.start_servers(config_dir)
        if not self.args.no_record:
            self.stack.start_recorder(self.stack.run_dir / 'demo.mcap')
        self.stack.start_orchestrators('standby')
        return self._activate_standbys()

    def _activate_standbys(self) -> bool:
        standbys = [c for c in self.stack.orchestrators if c.spec.role == 'standby']
        clients = [LifecycleClient(self.node, f'{c.spec.namespace}/{c.spec.node_name}') for c in standbys]
        if not self.spin_until(lambda: all(c.ready() for c in clients), 40, 'standby lifecycle services'):
            return False
        configured = [c.configure() for c in clients]
        if not self.spin_until(lambda: all(t.done() for t in configured), 20, 'standbys to configure'):
            return False
        if not self._transitions_succeeded(clients, configured, 'configure'):
            return False

        def following_leases() -> bool:
            # A standby that cannot see the live lease yet would claim the shard: activate only once it follows it.
            for child in standbys:
                topic = topics.shard_leader(
                    str(child.spec.parameters['site_id']), str(child.spec.parameters['shard_id'])
                )
                readers = self.node.get_subscriptions_info_by_topic(topic)
                if not any(
                    r.node_name == child.spec.node_name and r.node_namespace == child.spec.namespace for r in readers
                ):
                    return False
            return True

        if not self.spin_until(following_leases, 20, 'standbys to follow the leader leases'):
            return False
        settle = time.monotonic() + 2 * self.fleet.leadership.lease_sec  # a few lease renewals reach them
        self.spin_until(lambda: time.monotonic() >= settle, 10, 'standby settle')
        activated = [c.activate() for c in clients]
        if not self.spin_until(lambda: all(t.done() for t in activated), 20, 'standbys to activate'):
            return False
        if not self._transitions_succeeded(clients, activated, 'activate'):
            return False
        say(f'[{self.elapsed():5.1f}s] {len(standbys)} hot standbys active')
        return True

    @staticmethod
    def _transitions_succeeded(clients: list[LifecycleClient], pending: list[PendingTransition], what: str) -> bool:
        for client, transition in zip(clients, pending, strict=True):
            if not transition.succeeded:
                say(f'!! {client.fqn} refused to {what} (see its log)')
                return False
            if transition.confirmed_by_state:
                say(f'   {client.fqn}: {what} reply lost, state confirmed by get_state')
        return True

    def choose_driver(self) -> None:
        if self.args.driver != 'submit':
            wait = 20.0 if self.args.driver == 'action' else 5.0
            if self.spin_until(self.mission.servers_ready, wait, 'the RunMission action on every shard'):
                self.driver = self.mission
                self.mission.start()
                say(
                    f'[{self.elapsed():5.1f}s] mission {self.mission_id}: {self.fleet.agent_count} robots x '
                    f'{self.args.points} points, one RunMission goal per shard (/fleet/<site>/<shard>/mission)'
                )
                return
            say('note: RunMission action not served by every shard; driving the mission through the submit service')
        say(
            f'[{self.elapsed():5.1f}s] mission: {self.fleet.agent_count} robots x {self.args.points} points, '
            f'submitted step by step through /fleet/<site>/<shard>/submit'
        )

    def run_mission(self) -> bool:
        started = time.monotonic()
        self.choose_driver()
        next_progress = time.monotonic()

        def tick() -> None:
            nonlocal next_progress
            self.driver.tick()
            self._faults_tick()
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_PERIOD_SEC
                self._progress()

        def done() -> bool:
            return self.driver.finished and not self.observer.unresolved()

        remaining = self.args.timeout - (time.monotonic() - started)
        ok = self.spin_until(done, max(5.0, remaining), 'the mission to finish', tick)
        settle = time.monotonic() + 0.5  # late duplicate outcomes, if any, would arrive now
        while time.monotonic() < settle:
            self.spin_once(SPIN_SLICE_SEC)
        self._progress()
        return ok

    def _progress(self) -> None:
        done, total = self.driver.points()
        outcomes = sum(1 for c in self.observer.journal if c in self.observer.outcomes)
        leaders = ' '.join(
            f'{site}/{shard}:e{v.leader.epoch}' if v.leader else f'{site}/{shard}:-'
            for (site, shard), v in self.observer.shards.items()
        )
        states = f'  missions {self.mission.states()}' if self.driver is self.mission else ''
        say(
            f'[{self.elapsed():5.1f}s] points {done}/{total}{states}  robots docked {self.driver.robots_done()}/'
            f'{len(self.plans)}  commands {outcomes}/{len(self.observer.journal)} done  online '
            f'{self.observer.online()}/{self.fleet.agent_count}  leaders {leaders}'
        )

    def _faults_tick(self) -> None:
        plan = self.faults
        if plan is None:
            return
        done, total = self.driver.points()
        share = done / total if total else 1.0
        if plan.cut_sent is None and share >= plan.cut_at and plan.host:
            fault = Fault('cut', host=plan.host, duration_sec=self.args.cut_sec)
            self.fault_pub.publish(String(data=fault.to_json()))
            plan.cut_sent = time.time()
            say(f'[{self.elapsed():5.1f}s] FAULT: cut the link of robot host {plan.host} for {self.args.cut_sec:.0f}s')
        if plan.killed_at is None and share >= plan.kill_at:
            lease = self.observer.shards[plan.kill_shard].leader
            child = self.stack.orchestrator_of(lease.leader_id) if lease else None
            if lease is None or child is None:
                return
            self._killed_child = child
            plan.killed_epoch, plan.killed_leader = lease.epoch, lease.leader_id
            plan.killed_at = time.time()
            self.stack.supervisor.kill(child)
            say(
                f'[{self.elapsed():5.1f}s] FAULT: SIGKILL shard leader {lease.leader_id} '
                f'({"/".join(plan.kill_shard)}, epoch {lease.epoch}, pid {child.pid})'
            )

    # -- verdict -----------------------------------------------------------------------------------------

    def summary(self, mission_ok: bool, mission_s: float) -> dict[str, object]:
        outcomes = {
            c: [(o.outcome, o.attempts, o.latency_ms) for o in recs] for c, recs in self.observer.outcomes.items()
        }
        journal = {c: (e.agent_id, e.kind) for c, e in self.observer.journal.items()}
        merge_journals(journal, outcomes, read_shard_journals(sorted(self.stack.run_dir.glob(SHARD_JOURNALS))))
        tally = tally_outcomes(journal, outcomes)
        tolerance = self.fleet.intake.clock_skew_tolerance_sec
        execution = audit(self.stack.exec_logs(), tolerance_sec=tolerance)
        history = judge_history(
            journal=journal,
            outcomes={c: [o[0] for o in recs] for c, recs in outcomes.items()},
            executions=executions_from_logs(self.stack.exec_logs()),
            tolerance_sec=tolerance,
        )
        plan = self.faults
        takeover = None
        if plan is not None and plan.killed_at is not None:
            takeover = self.observer.takeover_after(plan.kill_shard, plan.killed_at, plan.killed_epoch)
        changes = leader_changes(self.observer.lease_log())
        kills = []
        if plan is not None and plan.killed_at is not None:
            kills.append(InjectedKill('/'.join(plan.kill_shard), plan.killed_at, plan.killed_epoch))
        unexpected = unexpected_leader_changes(changes, kills)
        done, total = self.driver.points()
        return build_summary(
            robots=self.fleet.agent_count,
            tally=tally,
            ack_ms=self.observer.first_ack_ms.values(),
            execution=execution,
            duplicates_suppressed=self.observer.agent_duplicates_suppressed(),
            takeover_s=takeover,
            history=history,
            extra={
                'dispatcher_duplicate_acks': self.observer.dispatcher_duplicates(),
                'leader_changes_total': len(changes),
                'leader_changes': {
                    shard: sum(1 for c in changes if c.shard == shard) for shard in self.observer.lease_log()
                },
                'unexpected_leader_changes': [
                    f'{c.shard} -> {c.leader_id} epoch {c.epoch} at {c.at - self.wall_started:.1f}s' for c in unexpected
                ],
                'points_done': done,
                'points_total': total,
                'robots_done': self.driver.robots_done(),
                'robots_failed': self.driver.robots_failed(),
                'mission_complete': mission_ok and self.driver.finished and self._mission_succeeded(),
                'driver': 'action' if self.driver is self.mission else 'submit',
                'mission_s': round(mission_s, 1),
                'submit_refusals': getattr(self.driver, 'refusals', 0),
                'submit_timeouts': getattr(self.driver, 'timeouts', 0),
                'step_resubmissions': getattr(self.driver, 'abandoned', 0),
                'orphan_commands': getattr(self.driver, 'orphan_commands', 0),
                'link_cut_host': plan.host if plan and plan.cut_sent else None,
                'leader_killed': plan.killed_leader if plan and plan.killed_at else None,
                'hosts': len(self.stack.hosts),
                'processes': len(self.stack.supervisor.children),
            },
        )

    def _mission_succeeded(self) -> bool:
        if self.driver is self.mission:
            return self.mission.succeeded
        return self.driver.robots_failed() == 0


STEP_DOWN_LINES = 12


def step_down_evidence(log_dir: Path) -> list[str]:
    """Why leaders stepped down during the run (not at shutdown), from the orchestrators' logs: the evidence behind
    an unexpected leader change."""
    found = []
    for log in sorted(log_dir.glob('*.log')):
        for line in log.read_text(errors='replace').splitlines():
            if 'stepping down as leader' in line and not line.endswith(': shutdown'):
                found.append(f'{log.name}: {line[:240]}')
    return found[:STEP_DOWN_LINES]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.robots < 4:
        print('fleet_sim.demo: error: --robots must be >= 4 (one per shard)', file=sys.stderr)
        return EXIT_USAGE
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix=f'fleetlanes-demo-{time.strftime("%Y%m%d-%H%M%S")}-'))
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dir = args.config_dir.resolve()
    try:
        fleet = write_scaled_config(config_dir / 'fleet.yaml', args.robots, run_dir / 'fleet.yaml')
    except ConfigError as exc:
        print(f'fleet_sim.demo: error: {exc}', file=sys.stderr)
        return EXIT_USAGE
    env = ros_env(os.environ)
    os.environ.update({k: env[k] for k in ('ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID')})
    os.environ.pop('ROS_STATIC_PEERS', None)
    say(
        f'fleetlanes demo: {fleet.agent_count} robots in {len(fleet.shards)} shards of {len(fleet.sites)} sites; '
        f'ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]} (discovery LOCALHOST); run dir {run_dir}'
    )
    stack = DemoStack.create(fleet, run_dir / 'fleet.yaml', config_dir, run_dir, env, args.robots_per_host)
    started = time.monotonic()
    try:
        # The runtime: rclpy's signal handlers off, SIGINT/SIGTERM a stop request (Interrupted at the next spin
        # slice), the observer node and its context shut down in order before the stack's processes are stopped.
        with ros_program('fleet_demo') as program:
            return _run(args, fleet, stack, config_dir, program, started)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        stack.stop()
        say(f'stopped {len(stack.supervisor.children)} processes; logs in {run_dir / "logs"}')


def _run(
    args: argparse.Namespace,
    fleet: FleetConfig,
    stack: DemoStack,
    config_dir: Path,
    program: RosProgram,
    started: float,
) -> int:
    run_dir = stack.run_dir
    demo = Demo(args, fleet, stack, program)
    if not demo.bring_up(config_dir):
        return EXIT_VIOLATED
    for what in stack.missing:
        say(f'note: not started: {what}')
    say(
        f'[{demo.elapsed():5.1f}s] ready: {len(stack.orchestrators)} orchestrators, {len(stack.hosts)} robot '
        f'hosts, gateway ws://127.0.0.1:{stack.gateway_port() or "?"}'
    )
    url = stack.foxglove_url()
    if url:
        say(
            f'watch live: Foxglove -> Open connection -> Foxglove WebSocket -> {url}; 3D panel, display frame '
            f'{fleet.sites[0]}_map, topics /{fleet.sites[0]}/*/odom'
        )
    mission_start = time.monotonic()
    ok = demo.run_mission()
    mission_s = time.monotonic() - mission_start
    resources = stack.resource_figures(time.monotonic() - started)
    summary = demo.summary(ok, mission_s)
    summary['wall_s'] = round(time.monotonic() - started, 1)
    summary['resources'] = resources
    stack.stop_recorder()
    recording = run_dir / 'demo.mcap'
    summary['recording'] = str(recording) if stack.recorder is not None and recording.exists() else None
    summary['recorded_messages'] = stack.recorded_messages()
    summary['not_started'] = stack.missing
    failures = invariant_failures(summary)
    summary['invariants_hold'] = not failures
    say(render_table(summary))
    for role, figures in resources.items():
        say(f'  {role:<10} {figures}')
    if summary['recording']:
        say(f'recording: {recording} (Foxglove -> Open local file)')
    say(f'leader changes: {summary["leader_changes"]}; unexpected: {summary["unexpected_leader_changes"] or "none"}')
    if summary['unexpected_leader_changes']:
        for line in step_down_evidence(run_dir / 'logs'):
            say(f'  {line}')
    for reason in failures:
        say(f'VIOLATED: {reason}')
    for refusal in demo.mission.refused():
        say(f'  mission refused: {refusal}')
    for (outcome, detail), count in demo.observer.unsuccessful_details().most_common(6):
        say(f'  {count:>4} x {outcome}: {detail}')
    for command_id in demo.observer.unresolved()[:10]:
        entry = demo.observer.journal[command_id]
        say(f'  no outcome: {command_id} {entry.kind} for {entry.agent_id} ({"/".join(entry.shard)})')
    say(json.dumps(summary, separators=(',', ':')))
    return EXIT_OK if not failures else EXIT_VIOLATED


if __name__ == '__main__':
    sys.exit(main())

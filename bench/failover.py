"""Failover benchmark (G1, G7) and e-stop latency: N agents run the inspection mission on one shard with a leader and
a hot standby; the leader is killed with SIGKILL mid-mission. Measured:
  takeover_s      SIGKILL -> first ack (agent clock) of a command carrying the standby's new epoch
  lost            commands journaled by either leader that never got an outcome
  executed_twice  command ids started more than once, from the agents' own execution records (RecordingExecutor)
  expired         EXPIRED outcomes
  estop_*_ms      e-stop engaged (orchestrator stamp) -> each busy agent's CANCELLED ack (agent stamp), all agents
Prints one JSON line. Run: python bench/failover.py [--agents 200] (environment active); bounded by --timeout.

This module is also the agents' executor plug-in (`executor:=failover:recording_executor`, bench/ on PYTHONPATH):
each agent process appends one JSON line per execution start and end to $FLEET_EXEC_LOG_DIR/<pid>.jsonl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

EXEC_LOG_ENV = 'FLEET_EXEC_LOG_DIR'


# ----------------------------------------------------------------------------------- agent-side plug-in


class RecordingExecutor:
    """Sleeps `delay_sec` (plus `duration_sec`) like SleepExecutor and records every execution on disk, before it
    starts and when it ends, so a double execution is visible even if the process is killed meanwhile."""

    def __init__(self, agent_id: str, delay_sec: float, sink: Callable[[dict[str, Any]], None]) -> None:
        self.agent_id = agent_id
        self.delay_sec = delay_sec
        self.sink = sink

    async def execute(self, command: Any, args: Mapping[str, Any]) -> Any:
        from fleet_agent.executors import ExecutionResult

        record = {
            'agent': self.agent_id,
            'command_id': command.command_id,
            'kind': command.kind,
            'point_id': str(args.get('point_id', '')),
            'epoch': command.epoch,
        }
        self.sink({**record, 'event': 'start', 't': time.time()})
        duration = self.delay_sec + float(args.get('duration_sec', 0.0))
        if duration > 0:
            await asyncio.sleep(duration)
        self.sink({**record, 'event': 'end', 't': time.time()})
        return ExecutionResult(True)


def recording_executor(delay_sec: float) -> Callable[[Any], RecordingExecutor]:
    """fleet_agent executor factory: `-p executor:=failover:recording_executor -p exec_delay_sec:=D`."""
    directory = Path(os.environ.get(EXEC_LOG_ENV, '.'))
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory / f'{os.getpid()}.jsonl').open('a', buffering=1)

    def sink(record: dict[str, Any]) -> None:
        log.write(json.dumps(record, separators=(',', ':')) + '\n')

    return lambda spec: RecordingExecutor(spec.agent_id, delay_sec, sink)


def read_execution_records(directory: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(directory.glob('*.jsonl')):
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by SIGKILL
    return records


def double_executions(records: list[dict[str, Any]]) -> dict[str, int]:
    """command_id -> number of execution starts, for ids started more than once."""
    starts: dict[str, int] = {}
    for r in records:
        if r.get('event') == 'start':
            starts[r['command_id']] = starts.get(r['command_id'], 0) + 1
    return {cid: n for cid, n in starts.items() if n > 1}


def points_inspected_twice(records: list[dict[str, Any]]) -> list[str]:
    ends: dict[str, int] = {}
    for r in records:
        if r.get('event') == 'end' and r.get('kind') == 'inspect':
            ends[r['point_id']] = ends.get(r['point_id'], 0) + 1
    return sorted(p for p, n in ends.items() if n > 1)


# ----------------------------------------------------------------------------------- the benchmark


def main() -> int:
    import argparse
    import math
    import signal
    import sys
    import tempfile
    import uuid

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import Child, percentile
    from rclpy.action import ActionClient
    from rclpy.node import Node
    from std_msgs.msg import String

    from fleet_core import topics
    from fleet_core.model import AckStatus, Outcome
    from fleet_interfaces.action import RunMission
    from fleet_interfaces.msg import Command as CommandMsg
    from fleet_interfaces.msg import CommandAck, CommandOutcomes, EStop, LeaderLease, TaskEvent
    from fleet_interfaces.srv import SetEStop, SubmitCommand
    from fleet_ros import qos
    from fleet_ros.convert import from_time
    from fleet_ros.runtime import ros_program

    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--agents', type=int, default=200)
    parser.add_argument('--agent-procs', type=int, default=2)
    parser.add_argument('--points-per-agent', type=int, default=2)
    parser.add_argument('--exec-delay', type=float, default=1.0, help='seconds every step takes on an agent')
    parser.add_argument('--kill-at', type=float, default=0.3, help='kill the leader at this share of points done')
    parser.add_argument('--timeout', type=float, default=240.0, help='overall bound (seconds)')
    opts = parser.parse_args()
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_DOMAIN_ID', str(101 + os.getpid() % 100))
    started = time.monotonic()
    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix='bench-failover-'))
    site, shard = 'bench', 'shard_0'
    agents = [f'{shard}_a{i:03d}' for i in range(1, opts.agents + 1)]
    config = work / 'fleet.yaml'
    # On a loaded host discovery of 200 agents' endpoints takes seconds: the standby must see the leader's lease
    # before it may consider leading, or both lead at start (fencing copes, but the run would not be clean).
    raw = {'sites': {site: {'shards': {shard: {'agents': agents}}}}, 'leadership': {'first_lease_wait_sec': 6.0}}
    config.write_text(json.dumps(raw))
    exec_dir = work / 'exec'
    os.environ[EXEC_LOG_ENV] = str(exec_dir)
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get('PYTHONPATH')]))

    def deadline_left() -> float:
        return float(opts.timeout) - (time.monotonic() - started)

    ros_args = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={site}', '-p', f'shard_id:={shard}']
    children: list[Child] = []

    def orchestrator(name: str) -> Child:
        argv = ['shard_orchestrator', *ros_args, '-p', f'orchestrator_id:={name}', '-r', f'__node:=orch_{name}']
        argv += ['-p', f'workflow_dir:={repo / "config" / "workflows"}', '-p', 'tracing_enabled:=false']
        argv += ['-p', f'state_dir:={work / "state" / name}']  # journals of this run only
        child = Child(argv, f'orch-{name}')
        children.append(child)
        return child

    ros = contextlib.ExitStack()  # the runtime's context and ordered teardown; Ctrl-C stays a KeyboardInterrupt
    program = ros.enter_context(ros_program('bench_failover', args=[], signals=()))
    executor = program.executor
    node = program.add_node(Node('bench_failover', context=program.context))

    state: dict[str, Any] = {'leases': [], 'estop': None, 'mission_events': []}
    journaled: set[str] = set()
    journal_log: dict[str, list[tuple[int, str, str]]] = {}

    def on_journal(m: CommandMsg) -> None:
        journaled.add(m.command_id)
        journal_log.setdefault(m.command_id, []).append((m.epoch, m.agent_id, m.kind))

    outcomes: dict[str, int] = {}
    acks: list[CommandAck] = []
    node.create_subscription(CommandAck, topics.shard_ack(site, shard), acks.append, qos.ACK)
    node.create_subscription(CommandMsg, topics.shard_journal(site, shard), on_journal, qos.EVENTS)

    def on_outcomes(batch: CommandOutcomes) -> None:
        for m in batch.outcomes:
            outcomes.setdefault(m.command_id, m.outcome)  # the first announced outcome of each command

    node.create_subscription(CommandOutcomes, topics.shard_outcome(site, shard), on_outcomes, qos.EVENTS)
    node.create_subscription(LeaderLease, topics.shard_leader(site, shard), state['leases'].append, qos.LATCHED)
    node.create_subscription(
        EStop, topics.shard_estop(site, shard), lambda m: state.__setitem__('estop', m), qos.LATCHED
    )
    node.create_subscription(
        TaskEvent, topics.shard_task_events(site, shard), state['mission_events'].append, qos.EVENTS
    )
    mission_journal: list[str] = []

    def on_mission_journal(msg: String) -> None:
        mission_journal.append(msg.data)

    node.create_subscription(
        String,
        f'{topics.shard_prefix(site, shard)}/mission_journal',
        on_mission_journal,
        qos.EVENTS,
    )

    def spin_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
        end = time.monotonic() + min(timeout, max(0.0, deadline_left()))
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > end:
                raise TimeoutError(f'failover bench: timed out waiting for {what}')
            executor.spin_once(timeout_sec=0.02)

    result: dict[str, Any] = {'bench': 'failover', 'agents': opts.agents}
    try:
        per_proc = math.ceil(len(agents) / opts.agent_procs)
        for index in range(opts.agent_procs):
            group = agents[index * per_proc : (index + 1) * per_proc]
            argv = [
                'fleet_agent',
                *ros_args,
                '-p',
                f'agent_ids:=[{",".join(group)}]',
                '-p',
                f'store_dir:={work / f"stores_{index}"}',
            ]
            argv += ['-p', 'executor:=failover:recording_executor', '-p', f'exec_delay_sec:={opts.exec_delay}']
            argv += ['-p', f'host_name:=agents_{index}']
            children.append(Child(argv, f'agents-{index}'))
        leader = orchestrator('leader')
        spin_until(lambda: any(m.leader_id == 'leader' for m in state['leases']), 30.0, 'the leader lease')
        standby = orchestrator('standby')
        spin_until(lambda: 'following leader' in standby.output(), 30.0, 'the standby to follow the leader')

        # Every agent must be up before the mission (their heartbeats reach the shard).
        seen: set[str] = set()
        from fleet_interfaces.msg import Heartbeat

        def on_heartbeat(msg: Heartbeat) -> None:
            seen.add(msg.agent_id)

        node.create_subscription(Heartbeat, topics.shard_heartbeat(site, shard), on_heartbeat, qos.HEARTBEAT)
        spin_until(lambda: len(seen) >= len(agents), 60.0, 'heartbeats from every agent')

        # ---- the mission, and the kill
        total = opts.points_per_agent * len(agents)
        side = math.ceil(math.sqrt(total))
        ids = [f'pt{i:04d}' for i in range(total)]
        xy = [c for i in range(total) for c in (2.0 * (i % side), 2.0 * (i // side))]
        action = ActionClient(node, RunMission, topics.shard_mission(site, shard))
        spin_until(action.server_is_ready, 30.0, 'the mission action server')
        mission_id = str(uuid.uuid4())
        goal = action.send_goal_async(
            RunMission.Goal(mission_id=mission_id, workflow='inspection', point_ids=ids, point_xy=xy)
        )
        spin_until(goal.done, 20.0, 'the goal response')
        if not goal.result().accepted:
            raise RuntimeError('the leader rejected the mission goal')

        def points_done() -> int:
            return max((e.points_done for e in state['mission_events'] if e.mission_id == mission_id), default=0)

        spin_until(lambda: points_done() >= opts.kill_at * total, 120.0, f'{opts.kill_at:.0%} of the points')
        done_at_kill = points_done()
        pending_at_kill = len(journaled - set(outcomes))
        leases_before_kill = list(state['leases'])
        epoch_at_kill = max(m.epoch for m in leases_before_kill)
        leader_changes_before_kill = len({(m.leader_id, m.epoch) for m in leases_before_kill}) - 1
        t_kill = time.time()
        os.kill(leader.proc.pid, signal.SIGKILL)
        leader.proc.wait(timeout=5.0)

        new_lease = spin_until(
            lambda: next((m for m in state['leases'] if m.epoch > epoch_at_kill), None), 30.0, 'a lease of a new epoch'
        )
        first_ack = spin_until(
            lambda: next((a for a in acks if a.epoch == new_lease.epoch), None), 30.0, 'an ack of the new epoch'
        )
        takeover_s = from_time(first_ack.stamp) - t_kill
        lease_s = from_time(new_lease.stamp) - t_kill

        def finished() -> TaskEvent | None:
            return next(
                (e for e in state['mission_events'] if e.mission_id == mission_id and e.event in (8, 9, 10)), None
            )

        final = spin_until(finished, max(30.0, deadline_left() - 30.0), 'the end of the mission')
        mission_s = time.time() - t_kill
        try:
            spin_until(lambda: not (journaled - set(outcomes)), 15.0, 'outcomes of every journaled command')
        except TimeoutError:
            missing = sorted(journaled - set(outcomes))
            print(f'failover bench: {len(missing)} command(s) without an outcome', file=sys.stderr)
            for cid in missing[:10]:
                print(
                    f'  {cid} {journal_log.get(cid)} acks={[(a.status, a.epoch) for a in acks if a.command_id == cid]}',
                    file=sys.stderr,
                )

        # ---- e-stop latency: every agent busy with a long sleep, then one e-stop
        submit = node.create_client(SubmitCommand, topics.shard_submit(site, shard))
        spin_until(submit.service_is_ready, 20.0, 'the submit service of the new leader')
        reply = submit.call_async(
            SubmitCommand.Request(kind='sleep', args_json='{"duration_sec": 30}', priority=1, ttl_sec=60.0)
        )
        spin_until(reply.done, 20.0, 'the sleep submission')
        sleep_ids = set(reply.result().command_ids)

        def accepted() -> set[str]:
            return {a.command_id for a in acks if a.command_id in sleep_ids and a.status == AckStatus.ACCEPTED}

        spin_until(lambda: len(accepted()) == len(sleep_ids), 30.0, 'every agent executing the sleep')
        estop = node.create_client(SetEStop, topics.shard_set_estop(site, shard))
        spin_until(estop.service_is_ready, 20.0, 'the set_estop service')
        engaged = estop.call_async(SetEStop.Request(engage=True, reason='bench', issued_by='bench'))
        spin_until(lambda: state['estop'] is not None and state['estop'].engaged, 20.0, 'the latched e-stop')
        t_estop = from_time(state['estop'].stamp)

        def cancelled() -> dict[str, float]:
            return {
                a.command_id: from_time(a.stamp)
                for a in acks
                if a.command_id in sleep_ids and a.status == AckStatus.CANCELLED
            }

        spin_until(lambda: len(cancelled()) == len(sleep_ids), 30.0, 'every agent stopped')
        spin_until(engaged.done, 10.0, 'the e-stop reply')
        latencies = [(t - t_estop) * 1000.0 for t in cancelled().values()]
        release = estop.call_async(SetEStop.Request(engage=False, reason='bench done', issued_by='bench'))
        spin_until(release.done, 10.0, 'the e-stop release')

        records = read_execution_records(exec_dir)
        twice = double_executions(records)
        result.update(
            takeover_s=round(takeover_s, 3),
            lost=len(journaled - set(outcomes)),
            executed_twice=len(twice),
            expired=sum(1 for o in outcomes.values() if o == Outcome.EXPIRED),
            estop_p50_ms=round(percentile(latencies, 50), 1),
            estop_p99_ms=round(percentile(latencies, 99), 1),
            estop_max_ms=round(max(latencies), 1),
            estop_agents=len(latencies),
            lease_published_s=round(lease_s, 3),
            leader_changes_before_kill=leader_changes_before_kill,
            new_leader=new_lease.leader_id,
            mission_state={8: 'COMPLETED', 9: 'FAILED', 10: 'CANCELLED'}[final.event],
            points_done=final.points_done,
            points_total=final.points_total,
            points_done_at_kill=done_at_kill,
            commands_pending_at_kill=pending_at_kill,
            commands=len(journaled),
            executions=sum(1 for r in records if r.get('event') == 'start'),
            points_inspected_twice=len(points_inspected_twice(records)),
            mission_s_after_kill=round(mission_s, 2),
            exec_delay_s=opts.exec_delay,
            mission_journal_entries=len(mission_journal),
            targets={'takeover_s': 2.0, 'lost': 0, 'executed_twice': 0, 'estop_p99_ms': 100.0},
        )
    finally:
        for child in reversed(children):
            child.stop()
        ros.close()
    print(json.dumps(result))
    ok = result.get('lost') == 0 and result.get('executed_twice') == 0 and result.get('mission_state') == 'COMPLETED'
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())

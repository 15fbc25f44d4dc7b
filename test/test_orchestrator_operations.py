"""E-stop and waved operations against a running mission, driven through fleetctl: the e-stop latches at once on
every agent and holds the mission (no step is issued while engaged), the release resumes it; a site pause is
announced and sent in waves and holds the mission until the resume; bad requests exit 2 and change nothing.

The e-stop that holds the running mission is engaged on the set_estop service fleetctl calls, by the test's own
client the moment the first point is done: a fleetctl start-up on a loaded host took long enough (10 s) for the
whole mission to finish first. `fleetctl estop` engages once more after the mission."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_core.mission import TaskEventKind
from fleet_interfaces.msg import Command, FleetOperation, Heartbeat, ShardStatus, TaskEvent
from fleet_interfaces.srv import SetEStop
from fleet_ros import qos

pytestmark = pytest.mark.system

SITE, SHARD = 'site_a', 'zone_1'
AGENTS = [f'r{i}' for i in range(1, 7)]


@pytest.fixture
def fleet_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    raw = {
        'sites': {SITE: {'shards': {SHARD: {'agents': AGENTS}}}},
        'leadership': {'first_lease_wait_sec': 1.0},
        'operations': {'wave_size': 2, 'wave_interval_sec': 0.1, 'lead_time_sec': 0.2},
    }
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / 'workflows').symlink_to(Path(__file__).resolve().parents[1] / 'config' / 'workflows')
    return path


def test_estop_and_site_pause_hold_the_mission_until_released(ros, processes, fleet_config, tmp_path):
    node = ros.node('operations_test')
    events: list[TaskEvent] = []
    beats: dict[str, Heartbeat] = {}
    statuses: list[ShardStatus] = []
    announcements: list[FleetOperation] = []
    commands: list[Command] = []
    node.create_subscription(TaskEvent, topics.shard_task_events(SITE, SHARD), events.append, qos.EVENTS)
    node.create_subscription(
        Heartbeat, topics.shard_heartbeat(SITE, SHARD), lambda m: beats.__setitem__(m.agent_id, m), qos.HEARTBEAT
    )
    node.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    node.create_subscription(FleetOperation, topics.shard_operations(SITE, SHARD), announcements.append, qos.OPERATIONS)
    for agent in AGENTS:
        node.create_subscription(Command, topics.agent_command(SITE, agent), commands.append, qos.COMMAND)
    set_estop = node.create_client(SetEStop, topics.shard_set_estop(SITE, SHARD))
    common = ['--ros-args', '-p', f'fleet_config:={fleet_config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    processes.start(['shard_orchestrator', *common], name='orchestrator')
    processes.start(
        ['fleet_agent', *common, '-p', f'store_dir:={tmp_path / "st"}', '-p', 'exec_delay_sec:=0.3'], name='agents'
    )
    ros.spin_until(lambda: len(beats) == len(AGENTS) and statuses, 40.0, 'agents and a leader')
    ros.spin_until(set_estop.service_is_ready, 30.0, "the leader's set_estop service")

    def fleetctl(*args: str) -> tuple[int, str]:
        proc = processes.start(['fleetctl', '--config', str(fleet_config), *args], name='fleetctl')
        code = ros.spin_until(lambda: not proc.alive() and (proc.popen.returncode,), 60.0, f'fleetctl {args[0]}')[0]
        return code, proc.output()

    # Bad input: nothing to release or resume, empty scope.
    assert fleetctl('estop', '--site', SITE, '--release')[0] == 2
    assert fleetctl('operation', 'resume', '--site', SITE)[0] == 2
    code, out = fleetctl('estop')
    assert code == 2 and 'empty e-stop scope' in out

    # Enough points that the mission is still running when the e-stop lands (a fleetctl start-up takes seconds).
    code, out = fleetctl('mission', 'start', 'inspection', '--site', SITE, '--points', '60', '--no-wait')
    assert code == 0, out
    mission_id = out.strip().splitlines()[-1]
    ros.spin_until(lambda: any(e.event == TaskEventKind.POINT_DONE for e in events), 60.0, 'a first point done')

    future = set_estop.call_async(SetEStop.Request(engage=True, reason='test', issued_by='test'))
    reply = ros.spin_until(lambda: future.done() and future.result(), 10.0, 'the e-stop reply')
    assert reply.ok, reply.error
    ros.spin_until(lambda: all(b.state == Heartbeat.STATE_ESTOPPED for b in beats.values()), 10.0, 'all ESTOPPED')
    ros.spin_until(lambda: any(e.event == TaskEventKind.MISSION_PAUSED for e in events), 10.0, 'the mission held')
    code, out = fleetctl('mission', 'status', '--json')
    assert json.loads(out.strip().splitlines()[-1])['state'] == 'PAUSED'
    held_at = len(commands)
    window_end = time.monotonic() + 0.5  # an observation window, not a synchronisation
    while time.monotonic() < window_end:
        ros.spin_once(0.05)
    # Only re-deliveries of steps already in flight may go out while engaged, never a new step.
    assert {c.command_id for c in commands[held_at:]} <= {c.command_id for c in commands[:held_at]}

    code, out = fleetctl('estop', '--site', SITE, '--release')
    assert code == 0, out
    ros.spin_until(lambda: any(e.event == TaskEventKind.MISSION_RESUMED for e in events), 10.0, 'the mission resumed')

    code, out = fleetctl('operation', 'pause', '--site', SITE)
    assert code == 0, out
    ros.spin_until(lambda: announcements and announcements[-1].op == FleetOperation.OP_PAUSE, 10.0, 'the announcement')
    assert announcements[-1].waves == 3 and announcements[-1].wave_size == 2
    ros.spin_until(lambda: sum(c.kind == 'pause' for c in commands) >= len(AGENTS), 20.0, 'pause sent in waves')
    code, out = fleetctl('operation', 'resume', '--site', SITE)
    assert code == 0, out
    ros.spin_until(lambda: sum(c.kind == 'resume' for c in commands) >= len(AGENTS), 20.0, 'resume sent in waves')

    done = ros.spin_until(
        lambda: next(
            (e for e in events if e.mission_id == mission_id and e.event == TaskEventKind.MISSION_COMPLETED), None
        ),
        120.0,
        'the mission to complete',
    )
    assert done.points_done == done.points_total == 60

    # `fleetctl estop` engages (the user's way; the hold above needed a faster hand) and releases.
    code, out = fleetctl('estop', '--site', SITE, '--reason', 'after the mission')
    assert code == 0 and 'e-stop ENGAGED (revision 3)' in out, out
    ros.spin_until(lambda: all(b.state == Heartbeat.STATE_ESTOPPED for b in beats.values()), 10.0, 'all ESTOPPED')
    # No mission starts while engaged: its first steps would go to robots that refuse them.
    code, out = fleetctl('mission', 'start', 'inspection', '--site', SITE, '--points', '6', '--no-wait')
    assert code != 0 and f'{SITE}/{SHARD} refused the mission: e-stop engaged on {SITE}/{SHARD}' in out, out
    code, out = fleetctl('estop', '--site', SITE, '--release')
    assert code == 0, out
    ros.spin_until(lambda: not any(b.state == Heartbeat.STATE_ESTOPPED for b in beats.values()), 10.0, 'none ESTOPPED')

"""Gazebo-path benchmark: goto accuracy and e-stop halt latency of the cmd_vel/odom executor, against kinematic
diff-drive stand-ins (fleet_diff_drive_sim), through a real orchestrator and agent host. Measured per round:
  goto_error_m     distance from the target of the first odometry after the SUCCEEDED outcome
  goto_s           submit -> SUCCEEDED outcome, for a 1-2 m goto
  estop_msg_ms     set_estop call -> the leader's latched EStop reaching an observer (baseline: the fleet's own part)
  estop_halt_ms    set_estop call -> the agent's zero twist on cmd_vel reaching the same observer
  halt_extra_ms    estop_halt_ms - estop_msg_ms: what the agent, its executor cancellation and cmd_vel add
Prints one JSON line. Run: python bench/motion.py [--rounds 5] (environment active); bounded by --timeout."""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Child, percentile

SITE, SHARD, AGENT = 'site_b', 'zone_b', 'b_r1'


def main() -> int:
    import argparse

    import yaml
    from geometry_msgs.msg import Twist
    from nav_msgs.msg import Odometry
    from rclpy.node import Node

    from fleet_core import topics
    from fleet_interfaces.msg import CommandOutcomes, EStop
    from fleet_interfaces.srv import SetEStop, SubmitCommand
    from fleet_ros import qos
    from fleet_ros.runtime import ros_program

    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--timeout', type=float, default=300.0, help='whole run (s)')
    opts = parser.parse_args()
    started = time.monotonic()
    rng = random.Random(7)

    tmp = Path(tempfile.mkdtemp(prefix='bench-motion-'))
    config = tmp / 'fleet.yaml'
    config.write_text(yaml.safe_dump({'sites': {SITE: {'shards': {SHARD: {'agents': [AGENT]}}}}}))
    common = ['-p', f'fleet_config:={config}', '-p', f'site_id:={SITE}', '-p', f'shard_id:={SHARD}']
    children = [
        Child(['shard_orchestrator', '--ros-args', *common], 'orchestrator'),
        Child(
            [
                'fleet_agent',
                '--ros-args',
                *common,
                '-p',
                f'store_dir:={tmp / "store"}',
                '-p',
                'executor:=fleet_agent.motion:diff_drive_executor',
            ],
            'agent',
        ),
        Child(
            [
                'fleet_diff_drive_sim',
                '--ros-args',
                '-r',
                f'__ns:={topics.agent_namespace(SITE, AGENT)}',
                '-p',
                'cmd_vel_timeout_sec:=0.0',
            ],
            'base',
        ),
    ]
    ros = contextlib.ExitStack()  # the runtime's context and ordered teardown; Ctrl-C stays a KeyboardInterrupt
    program = ros.enter_context(ros_program('motion_bench', args=[], signals=()))
    executor = program.executor
    node = program.add_node(Node('motion_bench', context=program.context))
    odom: list[tuple[float, Odometry]] = []
    twists: list[tuple[float, Twist]] = []
    estops: list[tuple[float, EStop]] = []
    outcomes: dict[str, Any] = {}

    def record_outcomes(batch: CommandOutcomes) -> None:
        for msg in batch.outcomes:
            outcomes.setdefault(msg.command_id, (time.monotonic(), msg))

    def stamped(into: list[Any]) -> Callable[[Any], None]:
        return lambda msg: into.append((time.monotonic(), msg))

    node.create_subscription(Odometry, topics.agent_odom(SITE, AGENT), stamped(odom), qos.TELEMETRY)
    node.create_subscription(
        Twist,
        f'{topics.agent_namespace(SITE, AGENT)}/cmd_vel',
        stamped(twists),
        qos.VELOCITY_COMMAND,
    )
    node.create_subscription(EStop, topics.shard_estop(SITE, SHARD), stamped(estops), qos.LATCHED)
    node.create_subscription(CommandOutcomes, topics.shard_outcome(SITE, SHARD), record_outcomes, qos.EVENTS)
    submit = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    set_estop = node.create_client(SetEStop, topics.shard_set_estop(SITE, SHARD))

    def spin_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = min(time.monotonic() + timeout, started + opts.timeout)
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f'timed out waiting for {what}')
            executor.spin_once(timeout_sec=0.005)

    def call(client: Any, request: Any) -> Any:
        future = client.call_async(request)
        spin_until(future.done, 15.0, f'a reply of {client.srv_name}')
        return future.result()

    def goto(x: float, y: float, ttl: float = 60.0) -> str:
        request = SubmitCommand.Request(
            agent_ids=[AGENT], kind='goto', args_json=json.dumps({'x': x, 'y': y}), priority=1, ttl_sec=ttl
        )
        reply = call(submit, request)
        if not reply.accepted:
            raise RuntimeError(f'goto refused: {reply.error}')
        return str(reply.command_ids[0])

    def moving() -> bool:
        return bool(odom) and odom[-1][1].twist.twist.linear.x > 0.2

    def odom_after(t: float) -> list[Odometry]:
        return [m for r, m in odom if r > t]

    def engaged_since(t: float) -> list[float]:
        return [r for r, m in estops if r >= t and m.engaged]

    def halted_since(t: float) -> list[float]:
        return [r for r, m in twists if r >= t and m.linear.x == 0.0 and m.angular.z == 0.0]

    errors: list[float] = []
    goto_s: list[float] = []
    msg_ms: list[float] = []
    halt_ms: list[float] = []
    extra_ms: list[float] = []
    try:
        spin_until(lambda: submit.service_is_ready() and set_estop.service_is_ready() and odom, 60.0, 'the fleet')
        for _ in range(opts.rounds):
            # A goto from where the base stands to a point 1-2 m away.
            here = odom[-1][1].pose.pose.position
            angle, reach = rng.uniform(-math.pi, math.pi), rng.uniform(1.0, 2.0)
            target = (here.x + reach * math.cos(angle), here.y + reach * math.sin(angle))
            sent = time.monotonic()
            command_id = goto(*target)
            done_at, outcome = spin_until(partial(outcomes.get, command_id), 60.0, 'the goto outcome')
            if outcome.outcome != 0:
                raise RuntimeError(f'goto ended with outcome {outcome.outcome}: {outcome.detail}')
            goto_s.append(done_at - sent)
            final = spin_until(partial(odom_after, done_at), 5.0, 'odometry after arrival')[0]
            p = final.pose.pose.position
            errors.append(math.hypot(p.x - target[0], p.y - target[1]))
            # A far goto, an e-stop while it drives, then release.
            far = goto(here.x + 50.0, here.y)
            spin_until(moving, 30.0, 'the base driving')
            engaged = time.monotonic()
            if not call(set_estop, SetEStop.Request(engage=True, reason='bench', issued_by='bench')).ok:
                raise RuntimeError('e-stop refused')
            msg_at = spin_until(partial(engaged_since, engaged), 10.0, 'the EStop message')[0]
            halt_at = spin_until(partial(halted_since, engaged), 10.0, 'the zero twist')[0]
            msg_ms.append((msg_at - engaged) * 1000)
            halt_ms.append((halt_at - engaged) * 1000)
            extra_ms.append((halt_at - msg_at) * 1000)
            spin_until(partial(outcomes.get, far), 30.0, 'the cancelled goto outcome')
            if not call(set_estop, SetEStop.Request(engage=False, reason='bench', issued_by='bench')).ok:
                raise RuntimeError('e-stop release refused')
            spin_until(lambda: estops and not estops[-1][1].engaged, 10.0, 'the release')
    finally:
        ros.close()
        for child in reversed(children):
            child.stop()
    result = {
        'bench': 'motion',
        'rounds': len(errors),
        'goto_error_m_p50': round(percentile(errors, 50), 4),
        'goto_error_m_max': round(max(errors), 4),
        'goto_s_p50': round(percentile(goto_s, 50), 2),
        'estop_msg_ms_p50': round(percentile(msg_ms, 50), 1),
        'estop_msg_ms_max': round(max(msg_ms), 1),
        'estop_halt_ms_p50': round(percentile(halt_ms, 50), 1),
        'estop_halt_ms_max': round(max(halt_ms), 1),
        'halt_extra_ms_p50': round(percentile(extra_ms, 50), 1),
        'halt_extra_ms_max': round(max(extra_ms), 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())

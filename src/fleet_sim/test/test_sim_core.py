"""Pure parts of the simulator: robot motion and battery, faults, the execution audit, settings, plans, summary,
layout and the node set."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from fleet_bringup.nodes import BringupOptions, node_set, parameter_text, sim_host_groups
from fleet_core.config import load_fleet_config, parse_fleet_config
from fleet_core.model import Command, Outcome, Priority
from fleet_sim.campaign import executions_from_logs
from fleet_sim.execlog import ExecutionLog, audit
from fleet_sim.executor import SimExecutor, agent_rng
from fleet_sim.faults import Fault, FaultError, FaultState, parse_fault
from fleet_sim.layout import home_of, inspection_points
from fleet_sim.plan import RobotPlan, inspection_steps
from fleet_sim.robot import SimRobot
from fleet_sim.settings import SimConfigError, SimSettings, parse_sim_settings
from fleet_sim.summary import (
    InjectedKill,
    build_summary,
    invariant_failures,
    judge_history,
    leader_changes,
    percentile,
    tally_outcomes,
    unexpected_leader_changes,
)

ROOT = Path(__file__).resolve().parents[3]
FLEET = parse_fleet_config(
    {'sites': {'s': {'shards': {'z1': {'agents': {'prefix': 'r', 'count': 5}}, 'z2': {'agents': ['q1', 'q2']}}}}}
)


def command(command_id: str = 'c1', kind: str = 'goto', deadline: float = 2e9, args: dict | None = None) -> Command:
    return Command(
        command_id, 't', 's', 'z1', 'r001', 1, 1, Priority.NORMAL, 1e9, deadline, kind, json.dumps(args or {})
    )


class TestRobot:
    def test_moves_at_speed_and_stops_on_arrival(self) -> None:
        robot = SimRobot('r', (0.0, 0.0), drain_per_m=1.0)
        assert robot.start_motion(3.0, 4.0, 2.0, now=10.0) == pytest.approx(2.5)
        assert robot.pose(11.25)[:2] == pytest.approx((1.5, 2.0))
        assert robot.velocity(11.0) == pytest.approx((1.2, 1.6))
        assert robot.pose(20.0)[:2] == (3.0, 4.0) and robot.velocity(20.0) == (0.0, 0.0)
        robot.set_docked(False, 10.0)
        robot.arrive(12.5)
        assert robot.odometer_m == pytest.approx(5.0)
        assert robot.battery(12.5) < 100.0 - 4.9

    def test_halt_keeps_the_reached_pose_and_docking_charges(self) -> None:
        robot = SimRobot('r', (0.0, 0.0), battery_pct=50.0, charge_per_sec=2.0, drain_per_sec=0.0)
        robot.start_motion(10.0, 0.0, 1.0, now=0.0)
        robot.halt(4.0)
        assert robot.pose(100.0)[:2] == pytest.approx((4.0, 0.0))
        robot.set_docked(True, 4.0)
        assert robot.battery(9.0) == pytest.approx(50.0 - 4 * 0.05 + 10.0)


class TestFaults:
    @pytest.mark.parametrize(
        ('text', 'reason'),
        [
            ('nope', 'not JSON'),
            ('{"op": "melt", "host": "h"}', 'op must be'),
            ('{"op": "cut"}', 'needs a target'),
            ('{"op": "cut", "host": "h"}', 'duration_sec > 0'),
            ('{"op": "slow", "agents": ["a"], "factor": 0}', 'factor > 0'),
            ('{"op": "skew", "agents": "a"}', 'list of strings'),
        ],
    )
    def test_bad_requests_are_refused_with_the_reason(self, text: str, reason: str) -> None:
        with pytest.raises(FaultError, match=reason):
            parse_fault(text)

    def test_cut_ends_by_itself_and_targets_only_its_agents(self) -> None:
        now = [100.0]
        state = FaultState('h1', ['a', 'b'], monotonic=lambda: now[0])
        assert state.apply(parse_fault(Fault('cut', agents=('a',), duration_sec=2.0).to_json())) == ['a']
        assert not state.allow('a') and state.allow('b') and state.dropped == 1
        now[0] = 102.0
        assert state.link_up('a')
        assert state.apply(Fault('cut', host='other', duration_sec=1.0)) == []
        assert state.apply(Fault('cut', host='*', duration_sec=1.0)) == ['a', 'b']
        state.apply(Fault('restore', host='h1'))
        assert state.link_up('a') and state.link_up('b')

    def test_skew_and_slow_apply_live_and_clear_undoes_them(self) -> None:
        state = FaultState('h1', ['a'])
        clock = state.agent_clock('a', wall=lambda: 1000.0)
        state.apply(Fault('skew', agents=('a',), offset_sec=-0.2))
        state.apply(Fault('slow', host='h1', factor=3.0))
        assert clock() == pytest.approx(999.8) and state.slow_factor('a') == 3.0
        state.apply(Fault('clear', host='h1'))
        assert clock() == 1000.0 and state.slow_factor('a') == 1.0


class TestExecutionAudit:
    def test_counts_double_and_late_starts(self, tmp_path: Path) -> None:
        log = ExecutionLog(tmp_path / 'exec-h.jsonl', 'h')
        log.started(command('c1', deadline=100.0), wall=50.0, agent_clock=50.0)
        log.finished(command('c1'), 51.0, 'SUCCEEDED')
        log.started(command('c2', deadline=100.0), wall=100.2, agent_clock=100.2)  # within tolerance
        log.started(command('c3', deadline=100.0), wall=101.0, agent_clock=99.0)  # late by the true clock
        log.close()
        other = ExecutionLog(tmp_path / 'exec-g.jsonl', 'g')
        other.started(command('c1', deadline=100.0), wall=60.0, agent_clock=60.0)
        other.close()
        with (tmp_path / 'exec-g.jsonl').open('a') as f:
            f.write('{"ev": "start", "comm')  # a write cut short by SIGKILL
        result = audit(sorted(tmp_path.glob('exec-*.jsonl')), tolerance_sec=0.25)
        assert result.executions == 4
        assert result.duplicates == ('c1',) and result.stale == ('c3',)


class TestExecutor:
    def test_goto_drives_logs_and_goes_home_to_its_own_dock(self, tmp_path: Path) -> None:
        settings = SimSettings(speed_mps=100.0)
        robot = SimRobot('r001', (5.0, 5.0))
        log = ExecutionLog(tmp_path / 'exec.jsonl', 'h')
        executor = SimExecutor(robot, settings, rng=agent_rng(1, 'r001'), log=log)

        async def run() -> None:
            result = await executor.execute(command('c1', args={'x': 8.0, 'y': 9.0}), {'x': 8.0, 'y': 9.0})
            assert result.success and robot.pose(1e12)[:2] == (8.0, 9.0) and not robot.docked
            home = {'x': 0.0, 'y': 0.0, 'point_id': 'home'}
            assert (await executor.execute(command('c2', args=home), home)).success
            assert robot.pose(1e12)[:2] == (5.0, 5.0)

        asyncio.run(run())
        log.close()
        events = [json.loads(line)['ev'] for line in (tmp_path / 'exec.jsonl').read_text().splitlines()]
        assert events == ['start', 'end', 'start', 'end']

    def test_failures_follow_the_seeded_rate(self) -> None:
        settings = SimSettings(failure_rate_report=0.5, report_sec=0.0)

        def outcomes(seed: int) -> list[bool]:
            executor = SimExecutor(SimRobot('r001', (0, 0)), settings, rng=agent_rng(seed, 'r001'))
            args = {'point_id': 'p'}
            return [
                asyncio.run(executor.execute(command(f'c{i}', 'report', args=args), args)).success for i in range(40)
            ]

        assert outcomes(3) == outcomes(3)
        assert 5 < outcomes(3).count(False) < 35

    def test_cancelled_goto_halts_the_robot(self) -> None:
        robot = SimRobot('r001', (0.0, 0.0))
        executor = SimExecutor(robot, SimSettings(speed_mps=1.0), rng=agent_rng(1, 'r001'))

        async def run() -> None:
            task = asyncio.create_task(executor.execute(command(args={'x': 100.0, 'y': 0.0}), {'x': 100.0, 'y': 0.0}))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run())
        assert 0.0 < robot.pose(1e12)[0] < 5.0


class TestSettings:
    def test_the_shipped_sim_yaml_is_valid(self) -> None:
        raw = yaml.safe_load((ROOT / 'config' / 'sim.yaml').read_text())
        params = raw['/**/sim_host']['ros__parameters']
        assert parse_sim_settings(params, 'config/sim.yaml').failure_rate('inspect') == params['failure_rate_inspect']

    @pytest.mark.parametrize(
        ('raw', 'reason'),
        [
            ({'speed': 1.0}, 'unknown'),
            ({'speed_mps': 0}, 'must be > 0'),
            ({'failure_rate_goto': 1.5}, '<= 1'),
            ({'seed': 1.5}, 'integer'),
            ({'dock_sec': 'x'}, 'number'),
            ({'undock_sec': -1}, '>= 0'),
        ],
    )
    def test_bad_values_name_the_key(self, raw: dict, reason: str) -> None:
        with pytest.raises(SimConfigError, match=reason) as info:
            parse_sim_settings(raw, 'sim.yaml')
        assert 'sim.yaml' in str(info.value) and next(iter(raw)) in str(info.value)


class TestPlan:
    def test_retries_then_skips_a_point_and_fails_on_a_lost_undock(self) -> None:
        steps = inspection_steps([('p1', 1.0, 1.0), ('p2', 2.0, 2.0)], (0.0, 0.0), 'm')
        assert [s.kind for s in steps] == ['undock'] + ['goto', 'inspect', 'report'] * 2 + ['goto', 'dock']
        plan = RobotPlan('r', steps, max_retries=1)
        plan.on_outcome(Outcome.SUCCEEDED)  # undock
        plan.on_outcome(Outcome.FAILED)  # goto p1, retried
        plan.on_outcome(Outcome.EXPIRED)  # goto p1 again: skip p1
        assert plan.points_skipped == ['p1'] and plan.current().point == 'p2'  # type: ignore[union-attr]  # p2 is left
        for _ in range(5):
            plan.on_outcome(Outcome.SUCCEEDED)
        assert plan.succeeded and plan.points_done == ['p2']
        failing = RobotPlan('r', steps, max_retries=0)
        failing.on_outcome(Outcome.REJECTED)
        assert failing.failed and failing.finished and failing.current() is None


class TestSummary:
    def test_tally_finds_missing_and_doubled_outcomes(self) -> None:
        outcomes = {'a': [(0, 1, 10.0)], 'b': [(1, 3, 20.0), (0, 1, 5.0)], 'd': [(0, 1, 2.0)] * 2, 'x': [(0, 1, 1.0)]}
        tally = tally_outcomes(['a', 'b', 'c', 'd'], outcomes)
        assert tally.commands == 4 and tally.missing == ('c',) and tally.conflicting == ('b',)
        assert tally.repeated == ('d',)
        assert tally.by_outcome['succeeded'] == 2 and tally.by_outcome['failed'] == 1 and tally.retries == 2
        assert percentile([5, 1, 3], 50) == 3 and percentile([], 99) == 0.0

    def test_every_violation_is_named(self) -> None:
        summary = {
            'duplicates_executed': 1,
            'stale_executions': 2,
            'missing_outcomes': 3,
            'conflicting_outcomes': 4,
            'mission_complete': False,
            'robots_done': 5,
            'robots': 6,
            'takeover_s': None,
            'leader_killed': 'x',
        }
        assert len(invariant_failures(summary)) == 6
        ok = {
            **summary,
            'duplicates_executed': 0,
            'stale_executions': 0,
            'missing_outcomes': 0,
            'conflicting_outcomes': 0,
            'mission_complete': True,
            'takeover_s': 0.9,
        }
        assert invariant_failures(ok) == []

    def test_outcomes_are_judged_against_the_execution_logs(self, tmp_path: Path) -> None:
        log = ExecutionLog(tmp_path / 'exec-h.jsonl', 'h')
        for command_id in ('ran', 'rejected-but-ran'):
            log.started(command(command_id, deadline=100.0), wall=50.0, agent_clock=50.0)
            log.finished(command(command_id), 51.0, 'SUCCEEDED')
        log.close()
        journal = {'ran': ('r001', 'goto'), 'rejected-but-ran': ('r001', 'goto'), 'stop-1': ('r001', 'stop')}
        outcomes = {'ran': [0, 0], 'rejected-but-ran': [int(Outcome.REJECTED)], 'stop-1': [0]}
        verdict = judge_history(
            journal=journal, outcomes=outcomes, executions=executions_from_logs([tmp_path / 'exec-h.jsonl']),
            tolerance_sec=0.25,
        )  # fmt: skip
        # 'stop' runs in the agent itself, never in the logged executor: its SUCCEEDED is not "never ran".
        assert [str(v) for v in verdict.violations] == [
            'wrong_outcome: rejected-but-ran on r001: announced REJECTED, but it ran '
            '(succeeded on r001 (epoch 1, seq 1))'
        ]
        tally = tally_outcomes(journal, {c: [(o, 1, 1.0) for o in v] for c, v in outcomes.items()})
        summary = build_summary(
            robots=1, tally=tally, ack_ms=[], execution=audit([tmp_path / 'exec-h.jsonl'], tolerance_sec=0.25),
            duplicates_suppressed=0, takeover_s=None, extra={'mission_complete': True}, history=verdict,
        )  # fmt: skip
        assert summary['history_violations'] == 1 and summary['history']['wrong_outcome'] == 1
        (reason,) = invariant_failures(summary)
        assert reason.startswith('1 outcome-truth violation(s)') and 'rejected-but-ran' in reason

    def test_only_the_injected_kill_may_change_a_leader(self) -> None:
        leases = {
            's1/a': [(1.0, 'a-0', 1)],
            # killed at 10.0 (epoch 1): the standby takes over; a late latched lease of the dead leader is no change
            's1/b': [(1.0, 'b-0', 1), (11.0, 'b-1', 2), (11.1, 'b-0', 1), (12.0, 'b-1', 2)],
            # a lapse without a fault: the standby takes over and the old leader wins it back
            's2/a': [(1.0, 'c-0', 1), (20.0, 'c-1', 2), (21.0, 'c-0', 3)],
        }
        changes = leader_changes(leases)
        assert [(c.shard, c.leader_id, c.epoch) for c in changes] == [
            ('s1/b', 'b-1', 2),
            ('s2/a', 'c-1', 2),
            ('s2/a', 'c-0', 3),
        ]
        kill = InjectedKill('s1/b', at=10.0, epoch=1)
        unexpected = unexpected_leader_changes(changes, [kill])
        assert [(c.shard, c.epoch) for c in unexpected] == [('s2/a', 2), ('s2/a', 3)]
        # A change before the kill, or on another shard, is not explained by it.
        assert unexpected_leader_changes(changes[:1], [InjectedKill('s1/b', at=12.0, epoch=1)]) == changes[:1]
        assert unexpected_leader_changes(changes[:1], [InjectedKill('s1/a', at=10.0, epoch=1)]) == changes[:1]
        # Without any fault every change is unexpected; with the kill alone explained, the run holds.
        assert unexpected_leader_changes(changes, []) == changes
        assert unexpected_leader_changes(changes[:1], [kill]) == []
        base = {
            'duplicates_executed': 0,
            'stale_executions': 0,
            'missing_outcomes': 0,
            'conflicting_outcomes': 0,
            'mission_complete': True,
            'unexpected_leader_changes': [],
        }
        assert invariant_failures(base) == []
        (reason,) = invariant_failures({**base, 'unexpected_leader_changes': ['s2/a -> c-1 epoch 2 at 20.0s']})
        assert reason.startswith('1 leadership change(s) without an injected fault') and 's2/a' in reason


def test_layout_gives_unique_docks_and_points() -> None:
    agents = [a for s in FLEET.shards for a in s.agents]
    assert len({home_of(FLEET, a) for a in agents}) == len(agents)
    points = [p for a in agents for p in inspection_points(FLEET, a, 3)]
    assert len({p[0] for p in points}) == len(points) == 3 * len(agents)


def test_node_set_splits_robots_over_hosts_with_their_own_stores() -> None:
    fleet = load_fleet_config(ROOT / 'config' / 'fleet.yaml', scale_agents=500)
    opts = BringupOptions(fleet_config='f.yaml', sim=True, robots_per_host=100, store_dir='/s', standby_autostart=False)
    groups = sim_host_groups(fleet, opts)
    assert sum(len(g[3]) for g in groups) == 500 and max(len(g[3]) for g in groups) <= 100
    specs = node_set(fleet, opts)
    stores = [s.parameters['store_dir'] for s in specs if s.role == 'sim']
    assert len(set(stores)) == len(stores) == len(groups)
    assert all(s.parameters.get('autostart') is False for s in specs if s.role == 'standby')
    assert parameter_text(['a', 'b']) == '[a, b]' and parameter_text('007') == "'007'" and parameter_text(1.5) == '1.5'


def test_step_down_evidence_names_lapses_but_not_shutdowns(tmp_path: Path) -> None:
    from fleet_sim.demo import step_down_evidence

    (tmp_path / 'orchestrator.s.z.log').write_text(
        '[WARN] [1.0] [s.z.orchestrator]: stepping down as leader (epoch 100): s.z.a: lease of epoch 100 lapsed\n'
        '[INFO] [2.0] [s.z.orchestrator]: following leader s.z.b (epoch 101)\n'
        '[WARN] [3.0] [s.z.orchestrator]: stepping down as leader (epoch 102): shutdown\n'
    )
    (lapse,) = step_down_evidence(tmp_path)
    assert lapse.startswith('orchestrator.s.z.log: ') and 'lapsed' in lapse
